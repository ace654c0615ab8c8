"""The run's report: the summary (one row per stage, scores and step times, markdown and
JSON) and the figures, on a tiny full run and on a run that stopped after step 3."""
import json

import numpy as np
from PIL import Image

import run_sample
from conftest import TINY
from voc12.dataloader import VOC

# the full run makes every step: the AMN, MCTformer, VWE and ICAM sources are evaluated, so reported
STAGES = ["ResNet CAM", "ViT CAM", "AMN CAM", "MCTformer CAM", "VWE CAM", "ICAM CAM", "naive ensemble", "OR",
          "AND", "ORANDNet", "pseudo-mask after IRN", "segmenter (seg)"]


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100
        return np.asarray(im.convert("RGB"))


def test_summary_rows_and_figures_of_a_full_run(full_run, toy_root):
    res = full_run / "result"
    with open(res / "summary.json") as f:
        s = json.load(f)
    rows = {r["stage"]: r for r in s["rows"]}
    assert [r["stage"] for r in s["rows"]] == STAGES
    with open(res / "eval" / "and_cam.json") as f:
        assert rows["AND"]["miou"] == json.load(f)["best"]["miou"]  # read from the eval record
    for r in s["rows"]:
        assert 0 <= r["miou"] <= 1 and 0 <= r["mprecision"] <= 1 and 0 <= r["mrecall"] <= 1
        assert 0 <= r["contour_f"] <= 1 and len(r["per_class_contour_f"]) == 21
        assert all("contour_f" in x for x in r["sweep"] or [])
        assert r["steps"] and all(t is not None and t >= 0 for t in r["steps"].values())
    assert rows["ORANDNet"]["steps"].keys() == {"train_orandnet", "make_orandnet_cam"}
    assert rows["AMN CAM"]["steps"].keys() == {"cam_to_amn_label", "train_amn", "make_amn_cam"}
    assert rows["MCTformer CAM"]["steps"].keys() == {"train_mct", "make_mct_cam"}
    assert rows["VWE CAM"]["steps"].keys() == {"train_vwe", "make_vwe_cam"}
    assert rows["ICAM CAM"]["steps"].keys() == {"train_icam", "make_icam_cam"}
    assert len(rows["ResNet CAM"]["sweep"]) >= 19 and rows["segmenter (seg)"]["evaluated_on"] == "val (4 images)"
    md = (res / "summary.md").read_text()
    for stage in STAGES:
        assert f"| {stage} |" in md
    assert "| **total** |" in md and "not run" not in md
    assert "| precision | recall | contour F |" in md and "## Per-class contour F" in md
    seg = rows["segmenter (seg)"]
    assert f"| {100 * seg['mrecall']:.1f} | {100 * seg['contour_f']:.1f} |" in md
    # the protocol card: what each row scored and how
    card = md[md.index("## Protocol"):]
    assert "| ResNet CAM | train | 8 | 1.0 | on | off |" in card
    assert "| segmenter (seg) | val | 4 | 1.0 | on | on | argmax |" in card
    assert rows["pseudo-mask after IRN"]["protocol"]["crf"] == "confident labels"
    figs = res / "figures"
    ids = VOC(toy_root).ids("train")
    drawn = sorted(p.name for p in figs.glob("grid_*.png"))
    assert len(drawn) == 6 and {f"grid_{ids[0]}.png", f"grid_{ids[-1]}.png"} <= set(drawn)
    for name in drawn + ["pr_threshold.png", "class_iou.png", "curves.png"]:
        _png(figs / name)


def test_every_run_is_recorded(full_run):
    with open(full_run / "result" / "runs.jsonl") as f:
        runs = [json.loads(line) for line in f]
    r = runs[-1]
    assert r["status"] == "ok" and r["seed"] == 0 and r["preset"] == "toy"
    assert [s["step"] for s in r["steps"]] == list(run_sample.STEP_NAMES)
    assert r["flags"]["cam_backbone"] == "resnet18"  # resolved after the preset
    assert r["flags"]["cam_iters"] == 1 and r["flags"]["cam_scales"] == [1.0]
    assert set(r["versions"]) == {"python", "torch", "torchvision", "timm", "numpy", "cuda", "cudnn"}
    assert r["device"] == "cpu" and r["gpu"] is None and r["world_size"] == 1
    assert r["start"] <= r["end"] and "--steps" in r["argv"]
    assert r["git_commit"] is None or len(r["git_commit"]) == 40
    assert r["git_dirty"] in (True, False, None)


def test_a_failed_run_is_recorded_with_its_error(toy_root, tmp_path):
    import pytest
    from misc.errors import PipelineError
    with pytest.raises(PipelineError):
        run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY,
                         "--steps", "make_cam"])
    [r] = [json.loads(line) for line in open(tmp_path / "result" / "runs.jsonl")]
    assert r["status"] == "error" and "run step train_cam first" in r["error"] and r["steps"] == []


def test_training_curves_per_iteration(full_run):
    for name, iters in (("cam", 1), ("vit", 1), ("orandnet", 2), ("irn", 2), ("seg", 2)):
        c = json.loads((full_run / "sess" / f"{name}.curve.json").read_text())
        assert c["iter"] == list(range(iters)) and len(c["loss"]) == len(c["lr"]) == iters
        assert all(v > 0 for v in c["lr"])


def test_report_of_a_partial_run_marks_missing_stages(toy_root, tmp_path):
    # CAMs for train_aug (train + aug, as the paper preset makes them), scored on train only
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY,
            "--infer_list", "train_aug", "--eval_list", "train"]
    run_sample.main(args + ["--steps", "1-3"])
    voc = VOC(toy_root)
    assert len(list((tmp_path / "result" / "cam").glob("*.npz"))) == len(voc.ids("train_aug")) == 16
    run_sample.main(args + ["--steps", "draw,summary", "--draw_ids", "toy_000002"])
    with open(tmp_path / "result" / "summary.json") as f:
        rows = json.load(f)["rows"]
    assert rows[0]["stage"] == "ResNet CAM" and rows[0]["miou"] is not None
    assert rows[0]["evaluated_on"] == "train (8 images)"
    assert all(r["miou"] is None and r["evaluated_on"] is None for r in rows[1:])
    md = (tmp_path / "result" / "summary.md").read_text()
    assert md.count("not run") == len(rows) - 1
    figs = sorted(p.name for p in (tmp_path / "result" / "figures").iterdir())
    assert figs == ["class_iou.png", "curves.png", "grid_toy_000002.png", "pr_threshold.png"]
    _png(tmp_path / "result" / "figures" / "grid_toy_000002.png")
