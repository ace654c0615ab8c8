"""MCTformer-V2 from its definitions: one class token per class (initialised from a
one-token ViT's, repeated), class scores = mean over channels of each class token's
final output, the position-embedding resize (unchanged at the training grid, DINO's
bicubic with the +0.1 scale elsewhere) at two sizes, and the attention-map fusion on a
tiny model, recomputed here from attention matrices written out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from misc.errors import PipelineError
from net.mctformer import MCTformer, fused_maps, make_mct, mct_cams, resize_pos_embed
from net.vit_cam import ViTClassifier

C = 3


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MCTformer("vit_tiny_patch16_224", 32, C, patch_size=8, depth=2, drop_path=0.0).eval()


def test_class_tokens_and_their_scores(tiny):
    assert tiny.cls_tokens.shape == (1, C, 192) and tiny.pos_embed.shape == (1, C + 16, 192)
    x = torch.randn(2, 3, 32, 32)
    final = {}
    hook = tiny.vit.blocks[-1].register_forward_hook(lambda m, i, o: final.setdefault("t", o))
    with torch.no_grad():
        scores, patch_scores = tiny(x)
    hook.remove()
    t = final["t"]
    torch.testing.assert_close(scores, t[:, :C].mean(-1))  # no final norm, mean over channels
    grid = t[:, C:].transpose(1, 2).reshape(2, 192, 4, 4)
    torch.testing.assert_close(patch_scores, tiny.head(grid).mean((2, 3)))


def test_a_one_token_vit_initialises_every_class_token(tmp_path):
    import timm
    vit = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
                            num_classes=5)  # 2x2 patches, one class token
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    m = MCTformer("vit_tiny_patch16_224", 32, C, str(path), patch_size=8, depth=1)
    for c in range(C):
        torch.testing.assert_close(m.cls_tokens[0, c], vit.cls_token[0, 0])
        torch.testing.assert_close(m.pos_embed[0, c], vit.pos_embed[0, 0])
    # the patch embeddings, 2x2 -> 4x4 by bicubic interpolation
    grid = vit.pos_embed[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(m.pos_embed[0, C:], want.flatten(2)[0].T)
    torch.testing.assert_close(m.vit.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    # the toy's --mct_pretrained vit: the trained ViT classifier, converted the same way
    clf = ViTClassifier("vit_tiny_patch16_224", 32, 5, patch_size=8, depth=1)
    m = make_mct(C, "vit_tiny_patch16_224", 32, "vit", patch_size=8, depth=1, vit=clf)
    torch.testing.assert_close(m.cls_tokens[0, C - 1], clf.vit.cls_token[0, 0])
    torch.testing.assert_close(m.pos_embed[0, C:], clf.vit.pos_embed[0, 1:])  # same 4x4 grid
    with pytest.raises(PipelineError, match="do not fit"):  # another architecture
        make_mct(C, "vit_tiny_patch16_224", 32, "vit", patch_size=8, depth=2, vit=clf)


def _cubic_sample(values, s, a=-0.75):
    """values (1-D) sampled at position s by cubic convolution (Keys' kernel with a = -0.75,
    PyTorch's bicubic), indices clamped at the border."""
    def w(x):
        x = abs(x)
        return (a + 2) * x**3 - (a + 3) * x**2 + 1 if x <= 1 else \
            a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0
    i0 = math.floor(s)
    return sum(w(s - k) * float(values[min(max(k, 0), len(values) - 1)])
               for k in range(i0 - 1, i0 + 3))


def test_position_embeddings_resize_at_two_sizes():
    # a 4x4 training grid whose channel 0 is a function of the row, channel 1 of the column
    ramp = torch.tensor([0.0, 1.0, 3.0, 2.0])
    rows, cols = torch.meshgrid(ramp, -ramp, indexing="ij")
    pos = torch.cat([torch.full((1, C, 2), 7.0),
                     torch.stack([rows, cols], -1).reshape(1, 16, 2)], 1)
    assert resize_pos_embed(pos, C, 4, 4, square=True) is pos  # training grid, square image
    for r, c in ((8, 6), (6, 6)):
        out = resize_pos_embed(pos, C, r, c, square=(r == c))
        assert out.shape == (1, C + r * c, 2)
        assert torch.equal(out[:, :C], pos[:, :C])  # class-token embeddings untouched
        g = out[0, C:].reshape(r, c, 2)
        # output row i samples the source at (i + 0.5) * 4 / (r + 0.1) - 0.5: the +0.1 of
        # the scale factor moves the sampling positions, not only the output size
        for i in range(r):
            src = (i + 0.5) * 4 / (r + 0.1) - 0.5
            assert g[i, :, 0] == pytest.approx(torch.full((c,), _cubic_sample(ramp, src)),
                                               abs=1e-5)
        for j in range(c):
            src = (j + 0.5) * 4 / (c + 0.1) - 0.5
            assert g[:, j, 1] == pytest.approx(torch.full((r,), -_cubic_sample(ramp, src)),
                                               abs=1e-5)
        plain = [_cubic_sample(ramp, (i + 0.5) * 4 / r - 0.5) for i in range(r)]
        assert max(abs(g[i, 0, 0].item() - plain[i]) for i in range(r)) > 1e-2
    # the same grid of a non-square image is resampled too (the reference's condition)
    assert not torch.equal(resize_pos_embed(pos, C, 4, 4, square=False), pos)


def _attention_by_hand(block, t):
    """softmax(q k^T / sqrt(d)) of one timm block on tokens t, averaged over heads."""
    a = block.attn
    b, n, d = t.shape
    q, k, _ = a.qkv(block.norm1(t)).reshape(b, n, 3, a.num_heads, d // a.num_heads) \
        .permute(2, 0, 3, 1, 4)
    return ((q @ k.transpose(-2, -1)) / math.sqrt(d // a.num_heads)).softmax(-1).mean(1)


def test_attention_fusion_on_a_tiny_model(tiny):
    torch.manual_seed(1)
    img = torch.randn(3, 32, 40)  # a 4 x 5 patch grid, not square
    keys = [0, 2]
    x = torch.stack([img, img.flip(-1)])
    with torch.no_grad():
        t, attn = tiny.tokens(x), []
        for b in tiny.vit.blocks:  # timm's own block forward, attention written out here
            attn.append(_attention_by_hand(b, t))
            t = b(t)
        patch_cam = F.relu(tiny.head(t[:, C:].transpose(1, 2).reshape(2, -1, 4, 5)))
        for layers in (1, 2):
            cls2patch = sum(a[:, :C, C:] for a in attn[-layers:]).reshape(2, C, 4, 5)
            fused = cls2patch * patch_cam
            p2p = sum(a[:, C:, C:] for a in attn)  # (2, 20, 20): patch i gathers from j
            refined = torch.einsum("bij,bcj->bci", p2p, fused.flatten(2)).reshape(2, C, 4, 5)
            torch.testing.assert_close(fused_maps(patch_cam, attn, C, layers, False), fused)
            torch.testing.assert_close(fused_maps(patch_cam, attn, C, layers), refined)
        # full size, flip folded back, labelled classes only, min-max per class (+1e-8)
        up = F.interpolate(refined, (32, 40), mode="bilinear", align_corners=False)
        m = (up[0] + up[1].flip(-1))[keys]
        lo, hi = m.flatten(1).min(1)[0], m.flatten(1).max(1)[0]
        want = (m - lo[:, None, None]) / (hi - lo + 1e-8)[:, None, None]
        # (timm's fused attention and the product written out differ in rounding only)
        torch.testing.assert_close(mct_cams(tiny, img, keys, layers=2), want, atol=1e-4, rtol=1e-4)
        assert mct_cams(tiny, img, []).shape == (0, 32, 40)


def test_schedule_is_timms_per_epoch_cosine_one_epoch_late():
    """timm 0.4's CosineLRScheduler as DeiT/MCTformer step it (after each epoch, with that
    epoch's index): epoch e trains at the scheduler's value for e - 1."""
    from misc.trainer import warmup_cosine_lr
    base, warm, low = 6.25e-5, 1e-6, 1e-5
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = warmup_cosine_lr(opt, per_epoch=2, epochs=60, warmup_epochs=5, warmup_lr=warm,
                             min_lr=low)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_epoch = lrs[::2]
    assert lrs[0] == lrs[1] == pytest.approx(warm)  # one lr per epoch
    assert per_epoch[1] == pytest.approx(warm)  # epoch 1 still at the warm-up start
    assert per_epoch[2] == pytest.approx(warm + (base - warm) / 5)
    assert per_epoch[5] == pytest.approx(warm + 4 * (base - warm) / 5)
    cos = lambda t: low + 0.5 * (base - low) * (1 + math.cos(math.pi * t / 60))  # noqa: E731
    assert per_epoch[6] == pytest.approx(cos(5)) and per_epoch[59] == pytest.approx(cos(58))


def test_no_weight_decay_on_biases_norms_and_embeddings(tiny):
    decay, no_decay = tiny.param_groups()
    names = {id(p): n for n, p in tiny.named_parameters()}
    nd = {names[id(p)] for p in no_decay}
    assert {"cls_tokens", "pos_embed", "head.bias", "vit.blocks.0.norm1.weight",
            "vit.blocks.0.attn.qkv.bias"} <= nd
    assert {names[id(p)] for p in decay} == {n for n, p in tiny.named_parameters()
                                              if p.ndim > 1 and n not in nd}
    assert "head.weight" not in nd and "vit.patch_embed.proj.weight" not in nd
