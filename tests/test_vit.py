"""ViT classifier and its CAMs: attribution and Grad-CAM find the patch that holds the
class evidence, batching over classes equals one pass per class, and steps 4-6 write
valid CAM files, skip finished ones and report the disagreement with the ResNet."""
import json
import os

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.cam_io import load_cam
from misc.errors import PipelineError
from net.vit_cam import ViTClassifier, vit_cams
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
@pytest.mark.parametrize("method", ["attribution", "gradcam"])
def test_cam_peaks_at_the_patch_holding_the_evidence(seed, method):
    m = evidence_model(seed)
    blank = torch.zeros(1, 3, 32, 32)
    x = blank.clone()
    x[..., 8:16, 16:24] = 1.0  # patch (row 1, col 2) of the 4x4 grid
    with torch.no_grad():
        k = int((m(x) - m(blank))[0].argmax())  # the class this patch is evidence for
    cam = vit_cams(m, x, [k], method)
    assert cam.shape == (1, 4, 4)
    assert divmod(int(cam.flatten().argmax()), 4) == (1, 2)


@pytest.mark.parametrize("method", ["attribution", "gradcam"])
def test_batched_classes_equal_one_pass_per_class(method):
    torch.manual_seed(0)
    m = ViTClassifier("vit_tiny_patch16_224", 32, 20, patch_size=8, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    keys = [1, 4, 9]
    together = vit_cams(m, x, keys, method)
    alone = torch.cat([vit_cams(m, x, [k], method) for k in keys])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # each class got its own gradient
    assert m.vit.blocks[0].attn.fused_attn == ViTClassifier(**TINY_VIT).vit.blocks[0].attn.fused_attn


def test_bad_backbone_and_method():
    with pytest.raises(PipelineError, match="not a timm model"):
        ViTClassifier("no_such_vit", 32, 20)
    with pytest.raises(PipelineError, match="not a plain ViT"):
        ViTClassifier("resnet18", 32, 20)
    with pytest.raises(PipelineError, match="attribution or gradcam"):
        vit_cams(ViTClassifier(**TINY_VIT), torch.zeros(1, 3, 32, 32), [0], "lrp")


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


@pytest.mark.parametrize("method", ["attribution", "gradcam"])
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
            assert flat.min() >= 0 and np.allclose(flat.max(1), 1, atol=1e-2)  # min-max (+1e-5)
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
