"""The paper presets' paths in CI: every step with the paper's architectures and options
(ResNet-50 CAMs with the reference's rules, DeiT-B/16 with LRP attribution, unclipped
OR/AND, FCN-8s on VGG-16 with the cross-entropy loss, IRN on ResNet-50, DeepLab
LargeFOV on ResNet-101, CRF), and the second row's (AMN on ResNet-50, MCTformer-V2 on
DeiT-S/16, OR/AND of their maps without offset), untrained weights, on the tiny toy at
small input sizes: only the sizes, lengths and weights differ from a real paper run."""
import json
import os

import numpy as np

import run_sample
from misc.cam_io import cam_path, load_cam
from pipeline.config import PRESETS
from voc12.dataloader import VOC

PAPER_SMALL = [
    "--preset", "paper", "--device", "cpu", "--num_workers", "0",
    "--pretrained", "none", "--vit_pretrained", "none", "--orand_pretrained", "none",
    "--irn_trunk", "none", "--seg_pretrained", "none",
    "--train_list", "train", "--draw_n", "2",
    "--cam_iters", "1", "--cam_batch_size", "2", "--cam_crop_size", "64",
    "--cam_resize_long", "48,80", "--cam_scales", "1.0,0.5",
    "--vit_iters", "1", "--vit_batch_size", "2", "--vit_img_size", "64",
    "--vit_resize_long", "48,80", "--orand_iters", "2",
    "--irn_iters", "1", "--irn_batch_size", "2", "--irn_crop_size", "64", "--exp_times", "3",
    "--seg_iters", "1", "--seg_batch_size", "2", "--seg_crop_size", "48",
    "--seg_infer_scales", "1.0"]


def test_every_step_of_the_paper_preset_runs(toy_root, tmp_path):
    voc = VOC(toy_root)
    few = tmp_path / "few.txt"  # CAMs, pseudo-masks and the segmenter's training set
    few.write_text("\n".join(voc.ids("train")[:4]) + "\n")
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *PAPER_SMALL,
                     "--infer_list", str(few), "--eval_list", str(few)])
    [run] = [json.loads(line) for line in open(tmp_path / "result" / "runs.jsonl")]
    assert run["status"] == "ok"
    assert [s["step"] for s in run["steps"]] == run_sample.parse_steps(PRESETS["paper"]["steps"])
    f = run["flags"]
    assert (f["cam_backbone"], f["vit_backbone"], f["orand_net"], f["irn_backbone"],
            f["seg_backbone"]) == ("resnet50", "deit_base_patch16_224", "fcn8s_vgg16",
                                   "resnet50", "resnet101")
    assert (f["vit_cam_method"], f["orand_loss"], f["orand_fcn"], f["cam_upsample"],
            f["orand_clip"]) == ("lrp", "ce", "reference", "round16", False)
    res = tmp_path / "result"
    labels = voc.labels(voc.ids(str(few)))
    for i, keys in labels.items():
        c = {d: load_cam(cam_path(res / d, i), keys) for d in ("cam", "vit_cam", "or_cam",
                                                              "orandnet_cam")}
        # OR of ResNet and ViT + 0.15, not clipped: it can pass 1 wherever the ViT is high
        np.testing.assert_allclose(c["or_cam"]["high_res"], np.clip(
            c["cam"]["high_res"] + c["vit_cam"]["high_res"] + 0.15
            - c["cam"]["high_res"] * (c["vit_cam"]["high_res"] + 0.15), None, None), atol=2e-3)
        if len(keys):
            assert c["or_cam"]["high_res"].max() > 1
    assert (res / "summary.md").exists() and (res / "seg_comp6_test.tar.gz").exists()


def test_the_second_row_preset_runs(toy_root, tmp_path):
    """paper_amn_mct: ResNet CAMs as AMN's repository makes them, AMN's labels, AMN,
    MCTformer, OR/AND of AMN's foreground maps and MCTformer's maps with no offset,
    ORANDNet, then IRN's labels from the ORANDNet maps in a folder of their own."""
    voc = VOC(toy_root)
    few = tmp_path / "few.txt"
    few.write_text("\n".join(voc.ids("train")[:4]) + "\n")
    small = ["--preset", "paper_amn_mct", *PAPER_SMALL[2:]]  # PAPER_SMALL opens with the preset
    steps = run_sample.parse_steps(PRESETS["paper_amn_mct"]["steps"])
    steps = steps[:steps.index("cam_to_ir_label") + 1] + ["summary"]
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *small,
                     "--amn_pretrained", "none", "--mct_pretrained", "none",
                     "--amn_iters", "1", "--amn_batch_size", "2", "--amn_crop_size", "64",
                     "--mct_iters", "1", "--mct_batch_size", "2", "--mct_img_size", "64",
                     # the FCN-8s (its path is the test above) would take most of the time
                     "--orand_net", "small_fcn", "--infer_list", str(few), "--eval_list", str(few),
                     "--steps", ",".join(steps)])
    [run] = [json.loads(line) for line in open(tmp_path / "result" / "runs.jsonl")]
    assert run["status"] == "ok" and [s["step"] for s in run["steps"]] == steps
    assert "train_vit" not in steps and "train_amn" in steps and "train_mct" in steps
    f = run["flags"]
    assert (f["cam_backbone"], f["mct_backbone"], f["orand_loss"]) == (
        "resnet50", "deit_small_patch16_224", "ce")
    assert (f["orand_sources"], f["cam_resample"], f["amn_infer_dropout"], f["mct_layers"],
            f["orand_momentum"], f["cam_lr"]) == ("amn_cam,mct_cam", "bicubic", True, 3, 1e-4, 0.1)
    res = tmp_path / "result"
    labels = voc.labels(voc.ids(str(few)))
    for i, keys in labels.items():
        c = {d: load_cam(cam_path(res / d, i), keys) for d in ("amn_cam", "mct_cam", "or_cam",
                                                              "and_cam", "orandnet_cam")}
        a, m = c["amn_cam"]["high_res"], c["mct_cam"]["high_res"]
        np.testing.assert_allclose(c["or_cam"]["high_res"], a + m - a * m, atol=2e-3)  # no offset
        np.testing.assert_allclose(c["and_cam"]["high_res"], a * m, atol=2e-3)
    # AMN's labels (from result/cam) and IRN's (from the ORANDNet maps): two folders
    assert sorted(os.listdir(res / "amn_label")) == sorted(os.listdir(res / "ir_label"))
    summary = json.loads((res / "summary.json").read_text())
    stages = [r["stage"] for r in summary["rows"]]
    assert stages[:3] == ["ResNet CAM", "AMN CAM", "MCTformer CAM"] and "ViT CAM" not in stages
