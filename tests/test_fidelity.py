"""The CAM side of the paper preset computes what the reference computes, each behaviour
checked from its definition (docs/FIDELITY.md lists them): the multiple-of-16 upsample
and crop of full-size ResNet CAMs, PIL input resizing, min-max on the patch grid before
the resize, unclipped OR/AND, stride-4 maps resized from full-size ones, the FCN-8s
crop rule, skips and init, the frozen layers, the ViT's per-epoch cosine and its
bilinear position-embedding resize, colour jitter."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from misc.cam_io import downsample_cam, normalize_minmax, to_cam_sizes
from misc.imutils import color_jitter, random_resize_long, rescale
from misc.orand import naive_ensemble, prob_and, prob_or
from misc.trainer import cosine_lr
from net.orandnet import FCN8s, orandnet_cams
from net.resnet_cam import CAMNet
from net.vit_cam import ViTClassifier, _resize_pos_embed
from pipeline.config import PRESETS


def bilinear(maps, h, w):
    """Bilinear resize with half-pixel centres (align_corners=False), written out: output
    pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped to the border."""
    maps = np.asarray(maps, np.float64)

    def axis(n_in, n_out):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo
    (y0, y1, fy), (x0, x1, fx) = axis(maps.shape[1], h), axis(maps.shape[2], w)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bot = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


def test_full_size_cams_resize_to_a_multiple_of_16_then_crop():
    """The reference's high_res: resize to the size rounded up to a multiple of 16 (an
    odd 21 x 37 image -> 32 x 48), keep the top-left 21 x 37; stride 4: straight to
    ceil(H/4) x ceil(W/4)."""
    m = torch.rand(2, 2, 3)
    low, high = to_cam_sizes(m, (21, 37), round_up=16)
    np.testing.assert_allclose(high.numpy(), bilinear(m, 32, 48)[:, :21, :37], atol=1e-6)
    np.testing.assert_allclose(low.numpy(), bilinear(m, 6, 10), atol=1e-6)
    _, direct = to_cam_sizes(m, (21, 37))
    np.testing.assert_allclose(direct.numpy(), bilinear(m, 21, 37), atol=1e-6)
    assert (high - direct).abs().max() > 0.05  # the stretch is visible
    # a size that is already a multiple of 16 is resized straight
    torch.testing.assert_close(to_cam_sizes(m, (32, 48), 16)[1], to_cam_sizes(m, (32, 48))[1])


def test_input_scales_resized_with_pil_bilinear_and_python_rounding():
    img = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    out = rescale(img, 0.5)
    # round(187.5) = 188: Python's rounding, as the reference computes the target size
    assert out.shape == (188, 250, 3)
    expected = np.asarray(Image.fromarray(img).resize((250, 188), Image.BILINEAR))
    assert np.array_equal(out, expected)
    # training: long side by PIL bicubic
    r = random_resize_long(img, 256, 256, np.random.default_rng(0))
    assert np.array_equal(r, np.asarray(Image.fromarray(img).resize((256, 192), Image.BICUBIC)))


def test_vit_maps_min_max_on_the_patch_grid_before_the_resize():
    grid = torch.tensor([[[0.2, 0.2, 0.2], [0.2, 3.0, 0.2], [0.2, 0.2, 0.2]]])
    g = normalize_minmax(grid)
    assert g.min() == 0 and g.max() == 1  # no epsilon: the peak is exactly 1
    _, high = to_cam_sizes(g, (8, 8))
    # no output pixel centre falls on the patch centre: the full-size peak stays below 1
    assert 0.5 < high.max() < 0.99
    assert torch.equal(normalize_minmax(torch.full((1, 2, 2), 0.7)), torch.zeros(1, 2, 2))


def test_or_and_of_offset_maps_are_not_clipped():
    resnet, vit = np.full((1, 4, 4), 0.5), np.full((1, 4, 4), 0.95) + 0.15
    np.testing.assert_allclose(prob_or([resnet, vit]), 0.5 + 1.1 - 0.55)  # 1.05 > 1
    np.testing.assert_allclose(prob_and([resnet, vit]), 0.55)
    np.testing.assert_allclose(prob_or([np.zeros((1, 2, 2)), np.full((1, 2, 2), 1.15)]), 1.15)
    # the naive ensemble: mean, ReLU, each class over its max
    np.testing.assert_allclose(naive_ensemble([resnet, vit]), 1 / (1 + 1e-5 / 0.825), rtol=1e-6)


def test_stride4_maps_are_the_full_size_maps_resized():
    high = np.random.default_rng(1).random((2, 21, 37)).astype(np.float32)
    low, same = downsample_cam(high)
    assert same is high and low.shape == (2, 6, 10)
    np.testing.assert_allclose(low, bilinear(high, 6, 10), atol=1e-6)

def test_orandnet_stride4_maps_are_its_normalised_full_size_maps_resized(fcn):
    lo, hi = orandnet_cams(fcn[0], torch.rand(2, 21, 37), "bce", torch.device("cpu"))
    np.testing.assert_allclose(hi.amax((1, 2)).numpy(), 1, atol=1e-4)  # max-normalised
    np.testing.assert_allclose(lo.numpy(), bilinear(hi, 6, 10), atol=1e-5)


@pytest.fixture(scope="module")
def fcn():
    """The two FCN-8s variants, random weights (VGG-16 is slow to build: once)."""
    torch.manual_seed(0)
    return FCN8s("none").eval(), FCN8s("none", variant="at_once").eval()


def _record_crops(net, x):
    """(input, like, output) of every crop of one forward."""
    seen, crop = [], net._crop

    def spy(a, like, offset):
        out = crop(a, like, offset)
        seen.append((a, like, out))
        return out
    net._crop = spy
    try:
        with torch.no_grad():
            y = net(x)
    finally:
        del net._crop
    return y, seen


@pytest.mark.parametrize("hw", [(64, 48), (120, 160)])
def test_fcn8s_reference_crops_at_the_height_difference_on_both_axes(hw, fcn):
    net, at_once = fcn
    x = torch.rand(1, 1, *hw)
    y, seen = _record_crops(net, x)
    assert y.shape[2:] == x.shape[2:] and len(seen) == 3
    for a, like, out in seen:
        c = (a.shape[2] - like.shape[2]) // 2  # from the heights, applied to both axes
        assert torch.equal(out, a[:, :, c:c + like.shape[2], c:c + like.shape[3]])
    # on this non-square input the column offset differs from the geometric one somewhere
    assert any((a.shape[3] - like.shape[3]) // 2 != (a.shape[2] - like.shape[2]) // 2
               for a, like, _ in seen)
    _, seen = _record_crops(at_once, x)
    for (a, like, out), c in zip(seen, (5, 9, 31)):
        assert torch.equal(out, a[:, :, c:c + like.shape[2], c:c + like.shape[3]])


def test_fcn8s_reference_skips_unscaled_scores_xavier_first_conv_random(fcn):
    net, at_once = fcn
    seen = {}
    hooks = [net.score_pool4.register_forward_hook(lambda m, i, o: seen.update(p4in=i[0])),
             net.to_pool4.register_forward_hook(lambda m, i, o: seen.update(p4=o))]
    with torch.no_grad():
        net(torch.rand(1, 1, 40, 40))
    for h in hooks:
        h.remove()
    assert torch.equal(seen["p4in"], seen["p4"])  # no 1e-2
    for m in (net.score_fr, net.score_pool4, net.score_pool3):  # Xavier normal: std sqrt(2/(in+out))
        std = math.sqrt(2 / (m.weight.shape[1] + 1))
        assert 0.7 * std < m.weight.std().item() < 1.3 * std
    assert all(m.weight.abs().max() == 0 for m in (at_once.score_fr, at_once.score_pool3))
    # at_once seeds the grey first conv with VGG's RGB mean; the reference leaves it random
    assert not torch.allclose(net.to_pool3[0].weight, at_once.to_pool3[0].weight)


def test_paper_optimisers_of_the_reference():
    p = PRESETS["paper"]
    assert (p["orand_momentum"], p["orand_weight_decay"], p["orand_loss"]) == (0.0, 0.0, "ce")
    assert p["cam_momentum"] == p["cam_weight_decay"] == 5e-4  # the poly-optimiser quirk
    assert p["cam_resize_long"] == p["vit_resize_long"] == (256, 512)
    assert p["cam_color_jitter"] == p["vit_color_jitter"] == (0.3, 0.3, 0.3, 0.1)


def test_detached_stage2_and_frozen_patch_embedding_receive_no_gradient():
    torch.manual_seed(0)
    net = CAMNet(20, "resnet18", detach_stage2=True, freeze_bn=True).train()
    net(torch.rand(2, 3, 64, 64)).sum().backward()
    early = list(net.stem.parameters()) + list(net.stages[0].parameters()) + \
        list(net.stages[1].parameters())
    assert all(p.grad is None for p in early)
    assert all(p.grad is not None for p in net.stages[2].parameters())
    assert {id(p) for p in net.param_groups()[0]}.isdisjoint({id(p) for p in early})
    vit = ViTClassifier("vit_tiny_patch16_224", 32, 20, patch_size=8, depth=1,
                        freeze_patch_embed=True)
    vit(torch.rand(2, 3, 32, 32)).sum().backward()
    proj = vit.vit.patch_embed.proj
    assert proj.weight.grad is None and proj.bias.grad is not None  # as the reference: weight only


def test_vit_cosine_stepped_once_per_epoch_over_an_iteration_horizon():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched, lrs = cosine_lr(opt, 30, per_epoch=10), []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expect = [0.01 * 0.5 * (1 + math.cos(math.pi * (i // 10) / 30)) for i in range(30)]
    np.testing.assert_allclose(lrs, expect)
    assert min(lrs) > 0.0098  # 3 epochs of 10 iterations: at most 1 - cos(pi 2/30)
    opt = torch.optim.SGD([p], lr=0.01)
    sched = cosine_lr(opt, 30)
    for _ in range(29):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < 1e-4  # the plain cosine reaches ~0


def test_position_embeddings_resized_bilinearly():
    vit = ViTClassifier("vit_tiny_patch16_224", 64, 20, patch_size=16, depth=1).vit  # 4x4 grid
    d = vit.pos_embed.shape[-1]
    row = torch.tensor([1.0, 3.0])
    grid = (row[None, :] + 10 * row[:, None]).reshape(1, 4, 1).expand(1, 4, d)  # 2x2 grid
    state = {"pos_embed": torch.cat([torch.full((1, 1, d), 7.0), grid], 1)}
    out = _resize_pos_embed(state, vit)["pos_embed"][0, :, 0]
    # 2 -> 4 with half-pixel centres: a, .75a + .25b, .25a + .75b, b
    axis = torch.tensor([1.0, 1.5, 2.5, 3.0])
    torch.testing.assert_close(out[1:].view(4, 4), axis[None, :] + 10 * axis[:, None])
    assert out[0] == 7.0  # the class token's embedding is kept


def test_colour_jitter_ranges_order_and_determinism():
    img = np.full((8, 8, 3), 100, np.uint8)
    assert color_jitter(img, (0, 0, 0, 0), np.random.default_rng(0)) is img
    means = [color_jitter(img, (0.3, 0, 0, 0), np.random.default_rng(s)).mean() for s in range(50)]
    assert 70 - 1 <= min(means) < 85 and 115 < max(means) <= 130 + 1  # factor in [0.7, 1.3]
    a = color_jitter(img, (0.3, 0.3, 0.3, 0.1), np.random.default_rng(5))
    b = color_jitter(img, (0.3, 0.3, 0.3, 0.1), np.random.default_rng(5))
    assert np.array_equal(a, b)
