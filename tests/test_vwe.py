"""VWE from its definitions: hybrid spatial pyramid pooling on hand-made maps (the
reference's cells, leftover rows dropped), the soft word assignment on hand-made
features (cosine softmax, detached features), histogram and word labels on hand-made
assignments, the three-term loss, the element-wise max merge of a flip pair; the steps
train_vwe, make_vwe_cam, eval_vwe_cam on the tiny toy, with VWE as an OR/AND source."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import run_sample
from conftest import TINY
from misc.cam_io import cam_path, load_cam
from misc.errors import PipelineError
from net.resnet_cam import multiscale_cams
from net.vwe import hybrid_pool, vwe_loss, word_assignment, word_histogram, word_labels
from voc12.dataloader import VOC


def test_hybrid_pool_of_a_4x4_ramp():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # mean 7.5; 1x1 grid: the max 15; 2x2: quadrant maxima 5, 7, 13, 15 -> 10; 4x4: every
    # pixel its own cell -> the mean 7.5; (2 * 7.5 + 15 + 10 + 7.5) / (2 + 3)
    assert hybrid_pool(x).item() == pytest.approx(9.5)
    assert hybrid_pool(x, gamma=0).item() == pytest.approx((15 + 10 + 7.5) / 3)
    assert hybrid_pool(x.expand(2, 3, 4, 4)).shape == (2, 3)


def test_hybrid_pool_cells_as_the_reference_tiles_them():
    """5x6 map: level-2 cells are 2x3 from the top-left, so row 4 is in none of them;
    level-4 cells are 1x1 (5 // 4 = 1), i.e. every pixel (30 cells, not 16)."""
    x = torch.zeros(1, 1, 5, 6)
    x[0, 0, 4, 0] = 10.0  # only the global max sees it
    x[0, 0, 0, 0] = 1.0
    mean = 11 / 30
    want = (2 * mean + 10 + 1 / 4 + mean) / 5
    assert hybrid_pool(x).item() == pytest.approx(want)
    with pytest.raises(PipelineError, match="--vwe_crop_size"):
        hybrid_pool(torch.zeros(1, 1, 3, 8))


def test_word_assignment_is_a_softmax_of_cosines_with_detached_features():
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-5.0, 0.0]], requires_grad=True)  # scale-free
    f = torch.tensor([[2.0, 0.0], [0.0, 3.0], [2.0, 1.0]]).T.reshape(1, 2, 1, 3)
    f.requires_grad_(True)
    a = word_assignment(f, words)
    s5 = 1 / math.sqrt(5)
    for p, cos in enumerate([(1, 0, -1), (0, 1, 0), (2 * s5, s5, -2 * s5)]):
        e = [math.exp(c) for c in cos]
        np.testing.assert_allclose(a[0, :, 0, p].detach().numpy(), [v / sum(e) for v in e],
                                   rtol=1e-6)
    (word_histogram(a) * torch.tensor([[1.0, -2.0, 3.0]])).sum().backward()
    assert f.grad is None  # the word terms never reach the features
    assert words.grad.abs().sum() > 0


def test_histogram_and_word_labels_of_hand_made_assignments():
    # (2 images, 3 words, 1 x 4 pixels); columns are pixels
    a = torch.tensor([[[0.7, 0.2, 0.3, 0.6],    # image 0: word 0 wins at pixels 0 and 3,
                       [0.2, 0.5, 0.3, 0.3],    # word 1 at pixel 1,
                       [0.1, 0.3, 0.4, 0.1]],   # word 2 at pixel 2
                      [[0.1] * 4, [0.8] * 4, [0.1] * 4]])[:, :, None]  # image 1: word 1 only
    np.testing.assert_allclose(word_histogram(a).numpy(), [[1.8, 1.3, 0.9], [0.4, 3.2, 0.4]],
                               rtol=1e-6)
    np.testing.assert_array_equal(word_labels(a).numpy(), [[1, 1, 1], [0, 1, 0]])
    a[0, :, 0, 2] = torch.tensor([0.3, 0.4, 0.3])  # pixel 2 now goes to word 1
    np.testing.assert_array_equal(word_labels(a).numpy()[0], [1, 1, 0])  # word 2: nowhere


def test_loss_is_the_sum_of_three_multilabel_soft_margins():
    g = torch.Generator().manual_seed(0)
    logits, hist, words = (torch.randn(2, n, generator=g) for n in (3, 3, 5))
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    w = (torch.rand(2, 5, generator=g) > 0.5).float()

    def margin(x, t):  # mean over classes and images of -[t log s(x) + (1 - t) log(1 - s(x))]
        return -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)).mean()
    want = margin(logits, y) + margin(hist, y) + margin(words, w)
    assert vwe_loss((logits, hist, words, w), y).item() == pytest.approx(want.item(), rel=1e-6)


class _ColumnWeighted(torch.nn.Module):
    """A stride-1 'CAM net' that is not flip-equivariant: map = channel 0 x column index + 1."""

    def cams(self, x):
        return x[:, :1] * torch.arange(1.0, x.shape[-1] + 1)


def test_flip_pair_merges_by_elementwise_max():
    img = torch.ones(3, 2, 4)
    # image: columns weighted 1 2 3 4; flip, flipped back: 4 3 2 1
    _, high = multiscale_cams(_ColumnWeighted(), [img], (2, 4), [0], round_up=1, merge="max")
    np.testing.assert_allclose(high[0].numpy(), [[1, 0.75, 0.75, 1]] * 2, rtol=1e-4)
    _, high = multiscale_cams(_ColumnWeighted(), [img], (2, 4), [0], round_up=1, merge="sum")
    np.testing.assert_allclose(high[0].numpy(), np.ones((2, 4)), rtol=1e-4)  # 5 everywhere
    with pytest.raises(ValueError):
        multiscale_cams(_ColumnWeighted(), [img], (2, 4), [0], merge="mean")


def test_vwe_steps_on_the_toy(toy_root, tmp_path):
    """train_vwe from the CAM classifier's trunk (stem, layer1, layer2 copied and never
    trained), make_vwe_cam, eval_vwe_cam at the reference's 0.14, then VWE as a source of
    make_orand with its calibrated offset (VWE's default: `auto`)."""
    flags = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY,
             "--orand_sources", "cam,vwe_cam"]
    run_sample.main(flags + ["--steps", "train_cam,make_cam,eval_cam,train_vwe,make_vwe_cam,"
                                        "eval_vwe_cam,make_orand"])
    cam = torch.load(tmp_path / "sess" / "cam.pth", weights_only=True)["model"]
    vwe = torch.load(tmp_path / "sess" / "vwe.pth", weights_only=True)
    assert vwe["meta"]["n_words"] == 256 and vwe["model"]["codebook"].shape == (256, 512)
    vwe = vwe["model"]
    for k, v in cam.items():
        if k.startswith(("stem.", "stages.0.", "stages.1.")):
            torch.testing.assert_close(vwe[k], v, rtol=0, atol=0)
    assert any((vwe[k] - v).abs().max() > 0 for k, v in cam.items() if k.startswith("stages.3."))
    res = tmp_path / "result"
    import json
    t = {n: json.loads((res / "eval" / f"{n}.json").read_text())["best"]["threshold"]
         for n in ("cam", "vwe_cam")}
    off = {"cam": 0.0, "vwe_cam": max(t.values()) - t["vwe_cam"]}  # cam: its registered 0
    voc = VOC(toy_root)
    labels = voc.labels(voc.ids("train"))
    for i, keys in labels.items():
        c = load_cam(cam_path(res / "vwe_cam", i), keys)
        assert c["high_res"].shape[1:] == voc.image(i).shape[:2]
        assert c["high_res"].min() >= 0 and c["high_res"].max() <= 1 + 1e-3
        r = load_cam(cam_path(res / "cam", i))["high_res"]
        np.testing.assert_allclose(load_cam(cam_path(res / "and_cam", i))["high_res"],
                                   (r + off["cam"]) * (c["high_res"] + off["vwe_cam"]),
                                   atol=2e-3)
    rec = json.loads((res / "eval" / "vwe_cam.json").read_text())
    assert rec["title"] == "VWE CAM" and rec["fixed"]["threshold"] == 0.14
    assert rec["protocol"]["flip"] == "max"
