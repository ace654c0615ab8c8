"""ViT classifier and its CAMs: the functional forward replays timm's, LRP follows its rules
(checked against an autograd statement of them), every method finds the patch that holds
the class evidence, several classes equal one pass per class at constant memory, and
steps 4-6 write valid CAM files, skip finished ones and report the disagreement with the
ResNet."""
import json
import os

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.cam_io import load_cam
from misc.errors import PipelineError
from net.vit_cam import METHODS, ViTClassifier, _tape, vit_cams
from voc12.dataloader import VOC

TINY_VIT = dict(name="vit_tiny_patch16_224", img_size=32, n_classes=20, patch_size=8, depth=1)


def evidence_model(seed):
    """1-block ViT with uniform attention (q = k = 0) and no position embedding: patch
    tokens differ only where the image does."""
    torch.manual_seed(seed)
    m = ViTClassifier(**TINY_VIT).eval()
    d = m.vit.embed_dim
    with torch.no_grad():
        m.vit.blocks[0].attn.qkv.weight[:2 * d] = 0
        m.vit.blocks[0].attn.qkv.bias[:2 * d] = 0
        m.vit.pos_embed.zero_()
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["grad_attn", "gradcam"])
def test_cam_peaks_at_the_patch_holding_the_evidence(seed, method):
    """Gradient methods point at the evidence; LRP's z+ rule on random weights need not
    (it is checked against its rules below, and against the reference in docs/FIDELITY.md)."""
    m = evidence_model(seed)
    blank = torch.zeros(1, 3, 32, 32)
    x = blank.clone()
    x[..., 8:16, 16:24] = 1.0  # patch (row 1, col 2) of the 4x4 grid
    with torch.no_grad():
        k = int((m(x) - m(blank))[0].argmax())  # the class this patch is evidence for
    cam = vit_cams(m, x, [k], method)
    assert cam.shape == (1, 4, 4)
    assert divmod(int(cam.flatten().argmax()), 4) == (1, 2)


@pytest.mark.parametrize("method", METHODS)
def test_batched_classes_equal_one_pass_per_class(method):
    torch.manual_seed(0)
    m = ViTClassifier("vit_tiny_patch16_224", 32, 20, patch_size=8, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    keys = [1, 4, 9]
    together = vit_cams(m, x, keys, method)
    alone = torch.cat([vit_cams(m, x, [k], method) for k in keys])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # each class got its own gradient


def test_memory_does_not_grow_with_the_class_count():
    """One forward whatever the class count: the tensors autograd keeps are the same for
    1 and 5 classes (the old batched pass kept 5x as much)."""
    torch.manual_seed(0)
    m = ViTClassifier("vit_tiny_patch16_224", 32, 20, patch_size=8, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    kept = []
    for keys in ([3], [0, 3, 5, 8, 13]):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vit_cams(m, x, keys, "lrp")
        kept.append(total[0])
    assert kept[0] == kept[1] > 0


def test_functional_forward_replays_timm():
    torch.manual_seed(0)
    m = ViTClassifier("deit_tiny_patch16_224", 48, 20, depth=2).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits, _, blocks = _tape(m.vit, x)
        torch.testing.assert_close(logits, m(x), rtol=1e-5, atol=1e-5)
    assert len(blocks) == 2 and blocks[0]["attn"].shape == (2, 3, 10, 10)


def _sd(a, b):  # the reference's stabilised division
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def _rule(f, xs, r):
    """LRP's generic rule, stated with autograd: R_x = x * d<f(x), R / f(x)>/dx."""
    xs = [x.detach().requires_grad_() for x in xs]
    z = f(*xs)
    return [x * g for x, g in zip(xs, torch.autograd.grad(z, xs, _sd(r, z)))]


def _linear(w):  # z+ rule: positive inputs through positive weights, negative through negative
    def rel(r, x):
        px, nx = x.clamp(min=0), x.clamp(max=0)
        a, b = _rule(lambda p, n: p @ w.clamp(min=0).T + n @ w.clamp(max=0).T, [px, nx], r)
        return a + b
    return rel


def _add(r, a, b):
    ra, rb = _rule(lambda p, q: p + q, [a, b], r)
    sa, sb = ra.sum(), rb.sum()
    fa, fb = (_sd(s.abs(), sa.abs() + sb.abs()) * r.sum() for s in (sa, sb))
    return ra * _sd(fa, ra.sum()), rb * _sd(fb, rb.sum())


def test_lrp_follows_the_rules_of_chefer_et_al():
    """A 1-block DeiT: the relevance of the attention map, propagated from the logit by the
    rules written here with autograd (z+ linear, Add split, identity through norms, GELU and
    softmax, half to each factor of attn @ v), times its gradient, positive part, mean over
    heads, plus the identity: the class token's row is the CAM."""
    torch.manual_seed(3)
    m = ViTClassifier("deit_tiny_patch16_224", 32, 20, depth=1).eval()
    vit, cls = m.vit, 7
    x = torch.randn(1, 3, 32, 32)
    logits, feat, (t,) = _tape(vit, x)
    grad = torch.autograd.grad(logits[0, cls], t["attn"])[0]
    r = torch.zeros(1, 20)
    r[0, cls] = 1
    r = _linear(vit.head.weight)(r, feat[:, 0])
    rt = torch.zeros_like(feat)
    rt[:, 0] = _rule(lambda z: z[:, 0], [feat], r)[0][:, 0]
    b = vit.blocks[0]
    r_res, r_mlp = _add(rt, t["x1"], t["f2"])
    r_mlp = _linear(b.mlp.fc1.weight)(_linear(b.mlp.fc2.weight)(r_mlp, t["g"]), t["h2"])
    rt = t["x1"] * (_sd(r_res, t["x1"]) + _sd(r_mlp, t["x1"]))  # the Clone rule
    _, r_att = _add(rt, t["x"], t["y"])
    r_att = _linear(b.attn.proj.weight)(r_att, t["o"]).reshape(1, 5, 3, 64).transpose(1, 2)
    r_map = _rule(lambda a, v: a @ v, [t["attn"], t["v"]], r_att)[0] / 2
    a_bar = (grad[0] * r_map[0]).clamp(min=0).mean(0)
    expected = (torch.eye(5) + a_bar)[0, 1:].view(2, 2)
    torch.testing.assert_close(vit_cams(m, x, [cls], "lrp")[0], expected.detach())
    # the relevance is LRP's, not the attention map's (grad_attn)
    assert not torch.allclose(vit_cams(m, x, [cls], "grad_attn")[0], expected.detach())


def test_bad_backbone_and_method():
    with pytest.raises(PipelineError, match="not a timm model"):
        ViTClassifier("no_such_vit", 32, 20)
    with pytest.raises(PipelineError, match="not a plain ViT"):
        ViTClassifier("resnet18", 32, 20)
    with pytest.raises(PipelineError, match="expected one of lrp"):
        vit_cams(ViTClassifier(**TINY_VIT), torch.zeros(1, 3, 32, 32), [0], "attribution")


def test_imagenet_weights_offline_says_how_to_pass_a_file(monkeypatch):
    import timm

    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PipelineError, match="--vit_pretrained /path/to/file"):
        ViTClassifier("vit_tiny_patch16_224", 32, 20, pretrained="imagenet")


def test_local_weights_file_with_position_embedding_resize(tmp_path):
    src = ViTClassifier("vit_tiny_patch16_224", 32, 20, patch_size=8, depth=1)
    torch.save(src.vit.state_dict(), tmp_path / "w.pth")
    dst = ViTClassifier("vit_tiny_patch16_224", 48, 20, pretrained=str(tmp_path / "w.pth"),
                        patch_size=8, depth=1)
    torch.testing.assert_close(dst.vit.blocks[0].attn.qkv.weight, src.vit.blocks[0].attn.qkv.weight)
    assert dst.vit.pos_embed.shape[1] == 1 + 6 * 6


FAST = [*TINY, "--vit_iters", "2"]


@pytest.mark.parametrize("method", METHODS)
def test_steps_4_to_6(toy_root, tmp_path, method, capsys):
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *FAST, "--vit_cam_method", method]
    run_sample.main(args + ["--steps", "1-6"])
    voc = VOC(toy_root)
    labels = voc.labels(voc.ids("train"))
    for i, keys in labels.items():
        c = load_cam(os.path.join(tmp_path, "result", "vit_cam", f"{i}.npz"), keys)
        h, w = voc.image(i).shape[:2]
        assert c["high_res"].shape == (len(keys), h, w)
        assert c["cam"].shape == (len(keys), (h + 3) // 4, (w + 3) // 4)
        for m in (c["cam"], c["high_res"]):
            flat = m.reshape(len(m), -1)
            # min-max on the patch grid, then resized: within [0, 1], maxima near 1
            assert flat.min() >= 0 and flat.max() <= 1 + 1e-3 and (flat.max(1) > 0.5).all()
    with open(tmp_path / "result" / "eval" / "vit_cam.json") as f:
        r = json.load(f)
    d = r["disagreement_vs_resnet"]
    assert r["fixed"]["threshold"] == 0.05 and len(r["per_class"]["precision"]) == 21
    assert abs(d["resnet_only"] + d["vit_only"] + d["both"] + d["neither"] - 1) < 1e-9
    capsys.readouterr()
    run_sample.main(args + ["--steps", "make_vit_cam"])
    assert "0 images written, 8 already done" in capsys.readouterr().out


def test_vit_weights_of_another_size_are_refused(toy_root, tmp_path):
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *FAST]
    run_sample.main(args + ["--steps", "train_vit"])
    with pytest.raises(PipelineError, match="img_size"):
        run_sample.main(args + ["--steps", "make_vit_cam", "--vit_img_size", "48"])


def test_a_step_does_not_depend_on_the_steps_run_before_it(toy_root, tmp_path):
    base = ["--voc12_root", toy_root, *FAST]
    run_sample.main(base + ["--work_dir", str(tmp_path / "a"), "--steps", "train_cam,train_vit"])
    run_sample.main(base + ["--work_dir", str(tmp_path / "b"), "--steps", "train_vit"])
    wa = torch.load(tmp_path / "a" / "sess" / "vit.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "sess" / "vit.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
