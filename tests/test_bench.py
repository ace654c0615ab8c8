"""The benchmark suite's plumbing (not its speed): one real case through the fresh-process
protocol into RESULTS.md, and the full-run estimate's arithmetic from the paper preset."""
import os
import subprocess
import sys

import torch

from bench import bench
from pipeline.config import PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_case_in_a_fresh_process_reaches_the_report(tmp_path):
    out = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--sizes", "toy",
                    "--only", "walk_", "--device", "cpu", "--out", str(out)], check=True,
                   capture_output=True, text=True)
    text = out.read_text()
    assert "| random walk, sparse vs dense (s/image; RSS growth GiB) | toy |" in text
    assert "GPU none" in text and "x faster" in text


def test_estimate_is_images_times_epochs_over_measured_speed(tmp_path):
    results = {(s, "voc"): {"img_s": 2.0, "peak_rss_gib": 1.0, "model": "m"}
               for s in ("train_cam", "make_cam", "train_vit", "train_seg")}
    rows = {r[0]: r for r in bench.estimate(results)}
    aug, p = bench.VOC_IMAGES["train_aug"], PRESETS["paper"]
    assert rows["train_cam"][1:] == (aug * p["cam_epochs"], 2.0, aug * p["cam_epochs"] / 2 / 3600)
    assert rows["train_seg"][3] == aug * p["seg_epochs"] / 2 / 3600
    assert rows["make_seg"][1] == bench.VOC_IMAGES["val"] + bench.VOC_IMAGES["test"]
    assert rows["train_irn"][2] is None and rows["train_irn"][3] is None  # not measured
    a = bench.argparse.Namespace(peak_tflops=None, workers=2)
    text = bench.write_report(str(tmp_path / "R.md"), results, torch.device("cpu"), a, 60)
    total = sum(r[3] or 0 for r in rows.values())
    assert f"| **total** | | | **{total:.1f}** |" in text
    assert "| train_irn | 31746 | not measured | — |" in text


def test_coco_estimate_takes_coco_rows_where_measured_else_voc_ones(tmp_path):
    results = {("train_cam", "voc"): {"img_s": 2.0}, ("make_cam", "voc"): {"img_s": 9.0},
               ("make_cam", "coco"): {"img_s": 1.0}, ("eval_classes", "coco"): {"img_s": 7.0}}
    rows = {r[0]: r for r in bench.estimate(results, "coco")}
    n, p = bench.COCO_IMAGES["train"], PRESETS["paper_coco"]
    assert rows["train_cam"][1:] == (n * p["cam_epochs"], 2.0, n * p["cam_epochs"] / 2 / 3600)
    assert rows["make_cam"][2] == 1.0 and rows["make_seg"][1] == bench.COCO_IMAGES["val"]
    assert rows["evaluations (eval_classes)"][1:3] == (7 * n, 7.0)
    assert bench.measured_at(results, "train_cam") == "voc"
    assert bench.measured_at(results, "make_cam") == "coco"
    assert not bench.runs_at("train_cam", "coco") and bench.runs_at("make_seg", "coco")
    assert not bench.runs_at("labels", "voc") and bench.runs_at("labels", "coco")
