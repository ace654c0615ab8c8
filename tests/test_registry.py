"""The pipeline declared once: a new CAM source is one registry entry (it then reaches
make_orand, the evaluation, the summary and the figures), classes come from the
dataset (a 5-class VOC-layout set runs every step of its preset), and imports flow one way."""
import ast
import json
import os
import shutil

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.cam_io import load_cam
from pipeline import registry
from voc12 import toy
from voc12.dataloader import VOC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_new_source_is_one_registry_entry(full_run, toy_root, tmp_path, monkeypatch):
    work = tmp_path / "w"
    shutil.copytree(full_run, work)
    res = work / "result"
    shutil.copytree(res / "cam", res / "fake_cam")  # the fake method's CAMs
    for d in ("or_cam", "and_cam", "naive_cam"):
        shutil.rmtree(res / d)
    fake = registry.Output("fake_cam", "cams", "Fake CAM", "cam_eval_thres", offset=0.0)
    at = [o.name for o in registry.OUTPUTS].index("vit_cam") + 1
    outputs = registry.OUTPUTS[:at] + (fake,) + registry.OUTPUTS[at:]  # the one edit
    monkeypatch.setattr(registry, "OUTPUTS", outputs)
    monkeypatch.setattr(registry, "_BY_NAME", {o.name: o for o in outputs})
    flags = ["--voc12_root", toy_root, "--work_dir", str(work), *TINY,
             "--orand_sources", "cam,vit_cam,fake_cam"]
    run_sample.main(flags + ["--steps", "make_orand,make_naive_cam,eval_orandnet,draw,summary"])
    for f in os.listdir(res / "cam"):  # make_orand: AND of three sources, vit's default offset
        r, v = (load_cam(res / d / f)["high_res"] for d in ("cam", "vit_cam"))
        np.testing.assert_allclose(load_cam(res / "and_cam" / f)["high_res"],
                                   r * r * np.clip(v + 0.15, 0, 1), atol=2e-3)
    rec = json.loads((res / "eval" / "fake_cam.json").read_text())  # the evaluation
    assert rec["title"] == "Fake CAM" and rec["fixed"]["threshold"] == 0.25
    summary = json.loads((res / "summary.json").read_text())  # the summary
    assert [r["stage"] for r in summary["rows"]][:3] == ["ResNet CAM", "ViT CAM", "Fake CAM"]
    assert "| Fake CAM | train (8 images) |" in (res / "summary.md").read_text()
    from step.draw import grid_panels  # the figures
    titles = [t for t, _, _ in grid_panels(run_sample.resolve_args(flags))]
    assert titles[:3] == ["ResNet CAM", "ViT CAM", "Fake CAM"] and "ORANDNet" in titles


def test_a_dataset_with_its_own_five_classes_runs_every_step(tmp_path):
    root = toy.generate(str(tmp_path / "data"), seed=1, quiet=True, n_train=8, n_aug=8,
                        n_val=2, n_test=1, size=64, n_classes=5)
    ds = VOC(root)
    assert ds.n_classes == 5 and ds.label_names == ("background", "aeroplane", "bicycle",
                                                    "bird", "boat", "bottle")
    assert ds.title == "VOC2012 (5 classes)" and ds.test_server is None
    run_sample.main(["--voc12_root", root, "--work_dir", str(tmp_path / "w"), *TINY,
                     "--draw_n", "1"])
    res = tmp_path / "w" / "result"
    for name in ("cam", "vit_cam", "or_cam", "and_cam", "orandnet_cam", "sem_seg", "seg"):
        rec = json.loads((res / "eval" / f"{name}.json").read_text())
        assert len(rec["class_names"]) == len(rec["per_class"]["iou"]) == 6
        assert rec["class_names"] == list(ds.label_names)
    summary = json.loads((res / "summary.json").read_text())
    assert summary["dataset"] == ds.title and all(r["miou"] is not None for r in summary["rows"])
    md = (res / "summary.md").read_text()
    table = md[md.index("## Per-class IoU"):]
    assert "| aeroplane |" in table and "| cow |" not in table  # its own names, only those
    assert not list(res.glob("*.tar.gz"))  # own classes: no VOC server to pack for
    assert (res / "figures" / "class_iou.png").exists() and (res / "seg" / "test").is_dir()
    labels = ds.labels(ds.ids("train"))
    assert max(int(k.max()) for k in labels.values() if len(k)) <= 4
    for i, keys in labels.items():
        assert load_cam(res / "orandnet_cam" / f"{i}.npz", keys, 5)["keys"].tolist() == keys.tolist()
    cam = torch.load(tmp_path / "w" / "sess" / "cam.pth", weights_only=True)
    assert cam["meta"]["n_classes"] == 5 and cam["model"]["classifier.weight"].shape[0] == 5
    # a mask holding a label above the class count is refused, naming the file
    from misc.errors import PipelineError
    from misc.imutils import read_label, save_label_png
    i = ds.ids("val")[0]
    path = ds.mask_path(i)
    m = read_label(path).copy()
    m[0, 0] = 7
    save_label_png(path, m, palette=False)
    with pytest.raises(PipelineError, match=f"{path}: label ids \\[7\\] outside 0-5"):
        run_sample.main(["--voc12_root", root, "--work_dir", str(tmp_path / "w"), *TINY,
                         "--steps", "eval_seg"])


def test_classes_file_errors_name_the_file(tmp_path):
    from misc.errors import PipelineError
    root = toy.generate(str(tmp_path / "d"), seed=0, quiet=True, n_train=2, n_aug=0, n_val=0,
                        n_test=0, size=48, n_classes=3)
    path = os.path.join(root, "classes.txt")
    with open(path, "w") as f:
        f.write("aeroplane\nbicycle\naeroplane\n")
    with pytest.raises(PipelineError, match=f"{path}.*repeated: \\['aeroplane'\\]"):
        VOC(root)
    with open(path, "w") as f:
        f.write("aeroplane\n")  # bicycle is in the XML of some image but not in the list
    ds = VOC(root)
    with pytest.raises(PipelineError, match="unknown class names .*classes.txt"):
        ds.labels(ds.ids("train") + ["toy_000002"])


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_imports_flow_one_way():
    """run_sample -> step/ -> pipeline/ -> net/, voc12/ -> misc/: never backwards, and
    no step imports another step."""
    rank = {"misc": 0, "net": 1, "voc12": 1, "pipeline": 2, "step": 3}
    for pkg in rank:
        for f in os.listdir(os.path.join(ROOT, pkg)):
            if not f.endswith(".py"):
                continue
            for mod in _imports(os.path.join(ROOT, pkg, f)):
                top = mod.split(".")[0]
                if top in rank and top != pkg:
                    assert rank[top] < rank[pkg], f"{pkg}/{f} imports {mod}"
                assert not (pkg == "step" and top == "step"), f"step/{f} imports {mod}"
                # networks and data are siblings: neither imports the other
                assert {pkg, top} != {"net", "voc12"}, f"{pkg}/{f} imports {mod}"


def _cell(text):
    """A README cell: paths, flags and file patterns in backticks."""
    return ", ".join(f"`{t}`" if any(c in t for c in "/<-") else t for t in text.split(", "))


def test_readme_step_table_is_current():
    """README's step table is the registry's: regenerate it from the block this prints."""
    rows = [f"| {n} | `{name}` | {_cell(reads)} | {_cell(writes)} |"
            for n, name, reads, writes in registry.step_table()]
    block = "\n".join(["| # | step | reads | writes |", "|---|---|---|---|", *rows])
    readme = open(os.path.join(ROOT, "README.md")).read()
    current = readme.split("<!-- step table -->\n")[1].split("\n<!-- /step table -->")[0]
    assert current == block, "README's step table is stale; replace it with:\n" + block
