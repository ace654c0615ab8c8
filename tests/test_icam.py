"""ICAM from its definitions: the importance sampler's draws against its pmf, the logits
of sampled probabilities, the classification loss on spatially constant maps, the
feature-similarity loss (sign on two pixels, value against the pairwise definition),
label-conditioned winner-take-all maps; the steps on the tiny toy (CAM trunk, frozen
parts unchanged, the source in --orand_sources) and on the paper preset's path."""
import json
import math

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.cam_io import cam_path, load_cam, normalize_max
from net.icam import (classification_loss, feature_similarity_loss, icam_cams,
                      importance_sample, pair_weights, probs_to_logits, winner_take_all)
from voc12.dataloader import VOC

ICAM_TINY = ["--icam_iters", "2", "--icam_batch_size", "4", "--icam_crop_size", "64",
             "--icam_scales", "1.0,0.5"]


def test_importance_sampler_draws_pixels_in_proportion_to_the_map():
    # two channels of one image, 2 x 3 pixels, distinct values so a value names its pixel;
    # channel 1 sums to 2 (the pmf is the map over its own sum) and has a zero pixel
    maps = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 8, 2, 4, 5, 1]], dtype=torch.float64)
    maps = maps / torch.tensor([[21.0], [10.0]])
    probs = maps.view(1, 2, 2, 3).clone().requires_grad_(True)
    n = 200_000
    torch.manual_seed(0)
    s = importance_sample(probs, n)
    assert s.shape == (1, 2, n)
    for k in range(2):
        vals = maps[k]
        counts = np.array([(s[0, k] == v).sum().item() for v in vals])
        assert counts.sum() == n  # every draw is one of the channel's pixels
        pmf = (vals / vals.sum()).numpy()
        assert np.abs(counts / n - pmf).max() < 0.004
        seen = pmf > 0
        chi2 = (((counts - n * pmf)[seen]) ** 2 / (n * pmf[seen])).sum()
        assert chi2 < 20.5  # 5 degrees of freedom at most: p = 0.001
        assert counts[~seen].sum() == 0  # a pixel of probability 0 is never drawn
    # the gradient flows through the drawn values: d(sum of draws)/d pixel = its count
    s.sum().backward()
    assert probs.grad[0, 1].flatten()[0] == 0 and probs.grad.sum() == 2 * n


def test_logits_of_probabilities():
    eps = 1e-3
    y = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    z = probs_to_logits(y, eps)
    assert z[0].item() == pytest.approx(math.log(eps))  # log(eps) - log(1)
    assert z[2].item() == pytest.approx(0.0, abs=1e-12)
    assert z[3].item() == pytest.approx(-math.log(eps))
    torch.testing.assert_close(probs_to_logits(1 - y, eps), -z)  # odd about 1/2
    # its sigmoid squeezes y affinely into [eps / (1 + eps), 1 / (1 + eps)]
    torch.testing.assert_close(torch.sigmoid(z), (y * (1 - eps) + eps) / (1 + eps))
    assert torch.isfinite(z).all()


def _bce(x, t):
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def test_classification_loss_on_spatially_constant_maps():
    # constant over space: every sample of a channel is its softmax value, GAP = the logit
    z = [0.5, 2.0, -1.0]  # background, class 1 (labelled), class 2
    logits = torch.tensor(z, dtype=torch.float64)[None, :, None, None].repeat(1, 1, 3, 2)
    labels = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e = [math.exp(v) for v in z]
    p = [v / sum(e) for v in e]
    f = [math.log(q * (1 - 1e-3) + 1e-3) - math.log(1 - q * (1 - 1e-3)) for q in p]
    gap = (_bce(z[1], 1) + _bce(z[2], 0)) / 2
    sampled = (_bce(f[1], 1) + _bce(f[2], 0)) / 2
    torch.manual_seed(0)
    got = classification_loss(logits, labels, n_samples=7, is_weight=0.8, eps=1e-3)
    assert got.item() == pytest.approx(0.2 * gap + 0.8 * sampled)
    assert classification_loss(logits, labels, is_weight=0).item() == pytest.approx(gap)
    # the max-pooled term: every channel's peak softmax, background labelled 1
    peak = (_bce(f[0], 1) + _bce(f[1], 1) + _bce(f[2], 0)) / 3
    got = classification_loss(logits, labels, is_weight=0, max_weight=0.5).item()
    assert got == pytest.approx(gap + 0.5 * peak)


def _two_pixels(colour_a, colour_b):
    rgb = torch.tensor([colour_a, colour_b], dtype=torch.float64).T.reshape(1, 3, 1, 2)
    y = torch.tensor([[0.9, 0.3], [0.1, 0.7]], dtype=torch.float64).reshape(1, 2, 1, 2)
    return rgb, y.requires_grad_(True)


@pytest.mark.parametrize("colours,pull", [(((0.2, 0.5, 0.8), (0.2, 0.5, 0.8)), True),
                                          (((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), False)])
def test_feature_similarity_loss_pulls_similar_colours_together(colours, pull):
    rgb, y = _two_pixels(*colours)
    loss = feature_similarity_loss(rgb, y, mu=2.5, sigma=5.0)
    # by hand: two ordered pairs at distance 1, ||y1 - y2||^2 = 0.6^2 + 0.6^2, 1 / (B h w) = 1/2
    d = np.abs(np.subtract(*colours)).mean()
    t = math.tanh(2.5 + math.log((d + 1e-5) / (1 - d + 1e-5)))
    g = math.exp(-0.5 / 25) / (2 * math.pi * 25)
    assert loss.item() == pytest.approx(-0.5 * 2 * g * 0.72 * t)
    assert (loss.item() > 0) == pull
    loss.backward()
    step = y.detach() - 10 * y.grad  # a gradient-descent step on the maps
    gap = lambda m: (m[0, :, 0, 0] - m[0, :, 0, 1]).norm().item()  # noqa: E731
    assert (gap(step) < gap(y.detach())) == pull  # together when alike, apart when not


def test_feature_similarity_loss_is_the_sum_over_pixel_pairs():
    gen = torch.Generator().manual_seed(0)
    h, w, k = 3, 4, 3
    rgb = torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # clamped
    y = torch.softmax(torch.randn(2, k, h, w, generator=gen, dtype=torch.float64), 1)
    x = rgb.clamp(0, 1)
    total = 0.0
    cells = [(r, c) for r in range(h) for c in range(w)]
    for b in range(2):
        for i, (ri, ci) in enumerate(cells):
            for j, (rj, cj) in enumerate(cells):
                g = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * 2.0 ** 2)) / (2 * math.pi * 4)
                d = (x[b, :, ri, ci] - x[b, :, rj, cj]).abs().mean().item()
                t = math.tanh(1.0 + math.log((d + 1e-5) / (1 - d + 1e-5)))
                total += g * ((y[b, :, ri, ci] - y[b, :, rj, cj]) ** 2).sum().item() * t
    want = -total / (2 * h * w)
    assert feature_similarity_loss(rgb, y, mu=1.0, sigma=2.0).item() == pytest.approx(want, rel=1e-5)
    wts = pair_weights(h, w, 2.0)
    assert wts.shape == (h * w, h * w) and torch.allclose(wts, wts.T)


def test_winner_take_all_then_max_normalisation_on_a_hand_made_map():
    m = torch.tensor([[[0.2, 0.6], [0.4, 0.1]],
                      [[0.3, 0.2], [0.4, 0.5]]])
    out = normalize_max(winner_take_all(m))
    want = torch.tensor([[[0.0, 0.6], [0.4, 0.0]],    # class 0 wins at (0,1); (1,0) a tie
                         [[0.3, 0.0], [0.4, 0.5]]])
    want = want / torch.tensor([0.6 + 1e-5, 0.5 + 1e-5])[:, None, None]
    torch.testing.assert_close(out, want)
    assert len(winner_take_all(m[:0])) == 0


class _PixelLogits(torch.nn.Module):
    """A stand-in network: logits of background + 3 classes from each pixel's colour."""

    def forward(self, x):
        return torch.stack([x[:, 0], x[:, 1], 2 * x[:, 2], -x[:, 0]], 1)


def test_icam_maps_condition_the_softmax_on_the_labels():
    img = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1))
    keys = [0, 2]  # classes 1 and 3 of background + 3: channels 0, 1, 3
    low, high = icam_cams(_PixelLogits(), [img], (5, 6), keys)
    z = _PixelLogits()(img[None])[0]
    p = torch.softmax(z, 0)[[0, 1, 3]]
    p = (p / p.sum(0))[1:]  # softmax over background and the labelled classes only
    want = p * (p == p.max(0).values)
    want = want / (want.flatten(1).max(1).values[:, None, None] + 1e-5)
    torch.testing.assert_close(high, want)
    assert low.shape == (2, 2, 2) and (high > 0).sum(0).max() == 1  # one winner per pixel
    # an image without labels: empty maps of both sizes
    low, high = icam_cams(_PixelLogits(), [img], (5, 6), [])
    assert low.shape == (0, 2, 2) and high.shape == (0, 5, 6)


def test_icam_steps_on_the_toy(toy_root, tmp_path):
    """train_cam, then train_icam from its trunk, make_icam_cam, eval_icam_cam; the frozen
    stem, layer1 and batch norms keep the CAM classifier's values; ICAM's maps enter OR/AND."""
    flags = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY, *ICAM_TINY]
    run_sample.main(flags + ["--steps", "1,train_icam,make_icam_cam,eval_icam_cam"])
    res, sess = tmp_path / "result", tmp_path / "sess"
    voc = VOC(toy_root)
    labels = voc.labels(voc.ids("train"))
    for i, keys in labels.items():
        c = load_cam(cam_path(res / "icam_cam", i), keys)
        assert c["high_res"].shape[1:] == voc.image(i).shape[:2]
        assert c["high_res"].min() >= 0 and c["high_res"].max() <= 1 + 1e-3
        assert ((c["high_res"] > 0).sum(0) <= 1).mean() > 0.99  # winner-take-all (ties rare)
    rec = json.loads((res / "eval" / "icam_cam.json").read_text())
    assert rec["title"] == "ICAM CAM" and rec["fixed"]["threshold"] == 0.5
    cam = torch.load(sess / "cam.pth", weights_only=True)["model"]
    icam = torch.load(sess / "icam.pth", weights_only=True)["model"]
    frozen = [k for k in cam if k.startswith(("stem.", "stages.0.")) or ".bn" in k
              or "downsample.1" in k]
    assert frozen and all(torch.equal(cam[k], icam[k]) for k in frozen)
    trained = [k for k in cam if k.startswith("stages.3.") and k.endswith("conv1.weight")]
    assert any(not torch.equal(cam[k], icam[k]) for k in trained)
    assert icam["classifier.weight"].shape[0] == voc.n_classes + 1
    run_sample.main(flags + ["--steps", "make_cam,eval_cam,make_orand", "--orand_sources",
                             "icam_cam,cam"])
    t = {n: json.loads((res / "eval" / f"{n}.json").read_text())["best"]["threshold"]
         for n in ("icam_cam", "cam")}
    i = next(i for i in labels if len(labels[i]))
    a, r = (load_cam(cam_path(res / d, i))["high_res"] for d in ("icam_cam", "cam"))
    # ICAM's default offset is calibrated (it was never paired in the reference), cam's 0
    np.testing.assert_allclose(load_cam(cam_path(res / "and_cam", i))["high_res"],
                               (a + max(t.values()) - t["icam_cam"]) * r, atol=2e-3)


def test_icam_on_the_paper_preset_path(toy_root, tmp_path):
    """The paper preset's ICAM: ResNet-50 trunk (untrained here), the reference's
    optimiser quirk and losses, four-scale maps, evaluated at 0.5."""
    voc = VOC(toy_root)
    few = tmp_path / "few.txt"
    few.write_text("\n".join(voc.ids("train")[:2]) + "\n")
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), "--preset", "paper",
                     "--device", "cpu", "--num_workers", "0", "--icam_pretrained", "none",
                     "--train_list", "train", "--infer_list", str(few), "--eval_list", str(few),
                     "--icam_iters", "1", "--icam_batch_size", "2", "--icam_crop_size", "64",
                     "--icam_resize_long", "48,80", "--icam_scales", "0.5,1.0",
                     "--steps", "train_icam,make_icam_cam,eval_icam_cam"])
    [run] = [json.loads(line) for line in open(tmp_path / "result" / "runs.jsonl")]
    f = run["flags"]
    assert run["status"] == "ok" and f["cam_backbone"] == "resnet50"
    assert (f["icam_momentum"], f["icam_weight_decay"], f["icam_is_weight"], f["icam_fsl_weight"],
            f["icam_samples"], f["icam_fsl_sigma"], f["icam_eval_thres"]) == (
        5e-4, 5e-4, 0.8, 0.5, 100, 5.0, 0.5)
    w = torch.load(tmp_path / "sess" / "icam.pth", weights_only=True)
    assert w["meta"]["backbone"] == "resnet50" and w["model"]["classifier.weight"].shape[:2] == (21, 2048)
    for i in voc.ids(str(few)):
        assert load_cam(cam_path(tmp_path / "result" / "icam_cam", i), voc.labels([i])[i])
