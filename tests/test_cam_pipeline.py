"""Steps 1-3 through the orchestrator on a tiny toy VOC: step table, CAM files, resume,
prerequisites and checkpoint identity."""
import os

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.cam_io import load_cam
from misc.errors import PipelineError
from pipeline.registry import step_table
from net.resnet_cam import CAMNet, multiscale_cams
from voc12.dataloader import VOC

# the tests' tiny run, with two CAM iterations and two scales
FAST = [*TINY, "--cam_iters", "2", "--cam_scales", "1.0,0.5"]


def run(root, work, *extra):
    return run_sample.main(["--voc12_root", root, "--work_dir", str(work), *FAST, *extra])


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    """A work dir after steps 1-3."""
    work = tmp_path_factory.mktemp("work")
    assert run(toy_root, work, "--steps", "1-3") == 0
    return work


def test_list_steps_numbers_names_reads_writes(capsys):
    run_sample.main(["--list_steps"])
    lines = capsys.readouterr().out.strip().splitlines()
    table = step_table()
    assert len(lines) == len(table) == len(run_sample.STEP_NAMES)
    for line, (n, name, reads, writes) in zip(lines, table):
        assert line.split()[:2] == [str(n), name]
        assert f"reads: {reads}" in line and line.endswith(f"writes: {writes}")
    # what a step writes is declared once, and the table derives the paths from it
    by_name = {name: (reads, writes) for _, name, reads, writes in table}
    assert by_name["make_cam"] == ("sess/cam.pth, infer_list images", "result/cam/<id>.npz")
    assert by_name["train_orandnet"][1] == "sess/orandnet.pth (+ .ckpt)"
    assert "result/eval/orandnet_cam.json" in by_name["eval_orandnet"][1]


def test_parse_steps_ranges_names_and_errors():
    assert run_sample.parse_steps("1-3") == ["train_cam", "make_cam", "eval_cam"]
    assert run_sample.parse_steps("eval_cam,train_cam") == ["train_cam", "eval_cam"]
    assert run_sample.parse_steps("2") == ["make_cam"]
    assert run_sample.parse_steps("0-1") == ["coco_masks", "train_cam"]  # step 0: COCO masks
    for bad in ("3-2", "1-99", str(len(run_sample.STEP_NAMES)), "nonsense"):  # one past the last
        with pytest.raises(PipelineError, match="--steps"):
            run_sample.parse_steps(bad)


def test_cam_net_shapes_and_output_stride():
    net = CAMNet(20, "resnet18", freeze_bn=False, freeze_stem=False).eval()
    x = torch.randn(2, 3, 64, 96)
    assert net(x).shape == (2, 20)
    assert net.cams(x).shape == (2, 20, 4, 6)  # output stride 16, not 32
    assert (net.cams(x) >= 0).all()


def test_frozen_bn_and_stem():
    net = CAMNet(20, "resnet18", freeze_bn=True, freeze_stem=True).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for p in net.stem.parameters())
    backbone, head = net.param_groups()
    assert all(p.requires_grad for p in backbone) and len(head) == 1


def test_multiscale_cams_normalised_per_class():
    torch.manual_seed(0)
    net = CAMNet(20, "resnet18", freeze_bn=False, freeze_stem=False).eval()
    imgs = [torch.randn(3, 50, 70), torch.randn(3, 25, 35)]
    low, high = multiscale_cams(net, imgs, (50, 70), [3, 7])
    assert low.shape == (2, 13, 18) and high.shape == (2, 50, 70)
    for m in (low, high):
        assert (m >= 0).all() and (m.flatten(1).max(1)[0] <= 1).all()
        assert (m.flatten(1).max(1)[0] > 0.9).all()  # each class divided by its own max


def test_cam_files_shape_keys_normalisation(trained, toy_root):
    voc = VOC(toy_root)
    ids = voc.ids("train")
    labels = voc.labels(ids)
    for i in ids:
        c = load_cam(os.path.join(trained, "result", "cam", f"{i}.npz"), labels[i])
        h, w = voc.image(i).shape[:2]
        assert c["high_res"].shape == (len(labels[i]), h, w)
        assert c["cam"].shape == (len(labels[i]), (h + 3) // 4, (w + 3) // 4)
        with np.load(os.path.join(trained, "result", "cam", f"{i}.npz"), allow_pickle=False) as z:
            assert z["high_res"].dtype == np.float16 and z["cam"].dtype == np.float16
        for m in (c["cam"], c["high_res"]):
            peak = m.reshape(len(m), -1).max(1)
            assert (m >= 0).all() and (peak <= 1.001).all()


def test_eval_json_fields(trained):
    import json
    with open(os.path.join(trained, "result", "eval", "cam.json")) as f:
        r = json.load(f)
    for k in ("name", "title", "list", "n_images", "class_names", "fixed", "best", "sweep",
              "per_class", "protocol"):
        assert k in r
    assert len(r["per_class"]["iou"]) == 21 and r["fixed"]["threshold"] == 0.25
    assert r["best"]["miou"] == max(s["miou"] for s in r["sweep"])
    assert r["protocol"]["scales"] == [1.0, 0.5] and r["protocol"]["flip"] is True


def test_make_cam_rerun_skips_finished_images(trained, toy_root, capsys):
    cam_dir = os.path.join(trained, "result", "cam")
    victim = sorted(os.listdir(cam_dir))[0]
    os.remove(os.path.join(cam_dir, victim))
    before = {f: os.stat(os.path.join(cam_dir, f)).st_mtime_ns for f in os.listdir(cam_dir)}
    run(toy_root, trained, "--steps", "make_cam")
    out = capsys.readouterr().out
    assert "1 images written, 7 already done" in out
    assert os.path.exists(os.path.join(cam_dir, victim))
    for f, t in before.items():
        assert os.stat(os.path.join(cam_dir, f)).st_mtime_ns == t
    assert not [f for f in os.listdir(cam_dir) if ".tmp" in f]


def test_step_before_its_prerequisite(toy_root, tmp_path):
    with pytest.raises(PipelineError, match="run step train_cam first"):
        run(toy_root, tmp_path, "--steps", "make_cam")
    with pytest.raises(PipelineError, match="run step make_cam first"):
        run(toy_root, tmp_path, "--steps", "eval_cam")


def test_weights_of_another_backbone_are_refused(trained, toy_root):
    with pytest.raises(PipelineError, match="resnet34"):
        run(toy_root, trained, "--steps", "make_cam", "--cam_backbone", "resnet34",
            "--infer_list", "val")


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="voc12_root"):
        run(str(tmp_path / "nope"), tmp_path, "--steps", "1")


def test_same_seed_same_weights(toy_root, tmp_path):
    for d in ("a", "b"):
        run(toy_root, tmp_path / d, "--steps", "train_cam")
    wa = torch.load(tmp_path / "a" / "sess" / "cam.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "sess" / "cam.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretrained_imagenet_offline_says_how_to_pass_a_file(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(PipelineError, match="--pretrained /path/to/file.pth"):
        CAMNet(20, "resnet18", pretrained="imagenet")


def test_pretrained_local_file(tmp_path):
    import torchvision
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = CAMNet(20, "resnet18", pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(net.stem[0].weight, ref.conv1.weight)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(PipelineError, match="does not match"):
        CAMNet(20, "resnet18", pretrained=str(tmp_path / "r34.pth"))
