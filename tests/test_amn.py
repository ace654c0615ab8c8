"""AMN from its definitions: label conditioning (the label enters only through the
linear label encoder, per image), the PCL loss on a hand-made 4x4 case, the nearest
label shrink (PIL's), the background exception of its CAMs; steps 7-10 on the tiny toy
with the CAM trunk, deterministic inference dropout and a label folder of their own."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
from conftest import TINY
from misc.cam_io import cam_path, load_cam
from net.amn import AMN, background_exception, pcl_loss, resize_labels
from voc12.dataloader import VOC


@pytest.fixture(scope="module")
def amn():
    torch.manual_seed(0)
    return AMN(3, "resnet18").eval()  # eval: dropout off, so outputs are deterministic


def test_label_conditioning_changes_the_output_only_through_the_label_vector(amn):
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    with torch.no_grad():
        out = amn(x, y)
        # the definition: head(features x (W y + b), broadcast over space)
        enc = y @ amn.label_enc.weight.T + amn.label_enc.bias
        torch.testing.assert_close(out, amn.head(amn.features(x) * enc[:, :, None, None]))
        # another label vector for image 1 changes image 1 only
        y2 = torch.tensor([[1.0, 0, 0], [0, 0, 1]])
        out2 = amn(x, y2)
        torch.testing.assert_close(out2[0], out[0])
        assert (out2[1] - out[1]).abs().max() > 1e-4
        # two label vectors the encoder maps alike give the same output
        w = amn.label_enc.weight.clone()
        amn.label_enc.weight[:, 1] = amn.label_enc.weight[:, 0]
        a, b = amn(x[:1], torch.tensor([[1.0, 0, 0]])), amn(x[:1], torch.tensor([[0, 1.0, 0]]))
        amn.label_enc.weight.copy_(w)
    torch.testing.assert_close(a, b)


def test_pcl_loss_on_a_hand_made_4x4_case():
    labels = torch.tensor([[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [255, 255, 2, 2],
                           [255, 0, 2, 2]])[None]
    p = torch.tensor([0.5, 0.25, 0.25])
    logits = p.log()[:, None, None].repeat(1, 4, 4)[None].clone()
    logits[0, :, labels[0] == 255] = torch.tensor([10.0, -10.0, 0.0])[:, None]  # ignored
    # eps 0.4, 3 channels: target 0.6 on the label, 0.2 elsewhere; -sum t log p per pixel
    bg = -(0.6 * math.log(0.5) + 0.2 * math.log(0.25) * 2)  # 1.4 ln 2, the 5 background pixels
    fg = -(0.2 * math.log(0.5) + 0.6 * math.log(0.25) + 0.2 * math.log(0.25))  # 1.8 ln 2
    loss = pcl_loss(logits, labels, eps=0.4)
    assert loss.item() == pytest.approx((bg + fg) / 2)  # not the pixel mean (5 bg vs 8 fg)
    assert loss.item() == pytest.approx(1.6 * math.log(2))
    # a batch without foreground pixels: the background mean alone (no 0/0)
    assert pcl_loss(logits, torch.where(labels == 255, 255, 0), 0.4).item() == pytest.approx(bg)


@pytest.mark.parametrize("src,dst", [((16, 16), (4, 4)), ((13, 17), (5, 6)), ((7, 9), (7, 9))])
def test_labels_shrink_as_pil_nearest_does(src, dst):
    lab = np.random.default_rng(0).integers(0, 21, src).astype(np.uint8)
    pil = np.asarray(Image.fromarray(lab).resize(dst[::-1], Image.NEAREST))
    np.testing.assert_array_equal(resize_labels(torch.from_numpy(lab), dst).numpy(), pil)


def test_background_exception_keeps_the_raw_softmax_where_labels_say_background():
    probs = torch.tensor([[[0.1, 0.5, 0.9], [0.3, 0.7, 0.2]],
                          [[0.6, 0.2, 0.4], [0.8, 0.05, 0.3]]])
    bg = torch.tensor([[True, False, False], [False, False, True]])
    out = background_exception(probs, bg)
    for k, (lo, hi) in enumerate(((0.1, 0.9), (0.05, 0.8))):  # min, max over the whole map
        want = (probs[k] - lo) / (hi - lo + 1e-5)
        want[bg] = probs[k][bg]
        torch.testing.assert_close(out[k], want)
    assert out[0, 0, 0] == pytest.approx(0.1) and out[0, 0, 2] == pytest.approx(0.8 / (0.8 + 1e-5))


def test_amn_steps_on_the_toy(toy_root, tmp_path):
    """cam_to_amn_label, train_amn (trunk from the CAM classifier), make_amn_cam,
    eval_amn_cam; with --amn_infer_dropout a rerun gives the same maps, and the labels live
    in their own folder (cam_to_ir_label's result/ir_label is another)."""
    flags = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY, "--amn_iters", "2",
             "--amn_batch_size", "4", "--amn_crop_size", "64"]
    run_sample.main(flags + ["--steps", "1-2,7-10"])
    res = tmp_path / "result"
    voc = VOC(toy_root)
    labels = voc.labels(voc.ids("train"))
    assert sorted(os.listdir(res / "amn_label")) == sorted(f"{i}.png" for i in labels)
    assert not (res / "ir_label").exists()
    for i, keys in labels.items():
        c = load_cam(cam_path(res / "amn_cam", i), keys)  # foreground only, the image's labels
        assert c["high_res"].shape[1:] == voc.image(i).shape[:2]
        assert c["high_res"].max() <= 1 + 1e-3 and c["high_res"].min() >= 0
    assert (res / "eval" / "amn_cam.json").exists()
    off = {i: load_cam(cam_path(res / "amn_cam", i))["high_res"] for i in labels}  # toy: off
    on = []
    for _ in range(2):  # dropout on, twice: seeded per image, so the two runs agree
        for f in os.listdir(res / "amn_cam"):
            os.remove(res / "amn_cam" / f)
        run_sample.main(flags + ["--steps", "make_amn_cam", "--amn_infer_dropout"])
        on.append({i: load_cam(cam_path(res / "amn_cam", i))["high_res"] for i in labels})
    for i in labels:
        np.testing.assert_array_equal(on[0][i], on[1][i])
    assert any(np.abs(on[0][i] - off[i]).max() > 1e-3 for i in labels if len(labels[i]))
