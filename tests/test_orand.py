"""ORANDNet: OR/AND against hand values, offsets and clipping, source agreement checks,
batched == one-map-at-a-time, both losses learn (and ce's single-class hole), the
foreign-CAM import with its pickle guard, and steps import_cams to eval_orandnet end to end."""
import argparse
import json
import os
import shutil

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY, write_pickled_cam
from misc.cam_io import cam_path, load_cam, save_cam
from misc.errors import PipelineError
from misc.orand import calibrate, naive_ensemble, prob_and, prob_or
from net.orandnet import FCN8s, SmallFCN, orand_loss, orandnet_cams
from pipeline.camdata import load_sources
from pipeline.registry import parse_sources, source_calibrations


def test_or_and_hand_values_two_and_three_sources():
    a, b, c = np.array([0.5, 0.2, 1.0]), np.array([0.4, 0.0, 0.3]), np.array([0.5, 1.0, 0.1])
    np.testing.assert_allclose(prob_or([a, b]), [0.7, 0.2, 1.0])  # a + b - ab
    np.testing.assert_allclose(prob_and([a, b]), [0.2, 0.0, 0.3])  # ab
    np.testing.assert_allclose(prob_or([a, b, c]), [0.85, 1.0, 1.0])  # 1 - (.5)(.6)(.5)
    np.testing.assert_allclose(prob_and([a, b, c]), [0.1, 0.0, 0.03])


@pytest.mark.parametrize("n", [2, 3, 6])
def test_n_way_or_and_laws(n):
    rng = np.random.default_rng(n)
    maps = list(rng.random((n, 50)))
    o, a = prob_or(maps), prob_and(maps)
    assert np.all(a <= np.min(maps, 0) + 1e-12) and np.all(o >= np.max(maps, 0) - 1e-12)
    np.testing.assert_allclose(1 - o, prob_and([1 - m for m in maps]))  # De Morgan
    np.testing.assert_allclose(prob_or(maps[::-1]), o)  # order does not matter
    np.testing.assert_allclose(prob_or([prob_or(maps[:2])] + maps[2:]), o)  # associative
    np.testing.assert_allclose(prob_and(maps + [np.ones(50)]), a)  # 1 is AND's identity
    np.testing.assert_allclose(prob_or(maps + [np.zeros(50)]), o)  # 0 is OR's identity
    assert np.all(np.diff(prob_and([np.linspace(0, 1, 50)] * n)) >= 0)  # monotone


def test_calibrated_offsets_bring_best_thresholds_to_the_highest(tmp_path):
    args = argparse.Namespace(result_dir=str(tmp_path / "result"))
    for name, best in (("a", 0.35), ("b", 0.10), ("c", 0.20)):
        write(tmp_path / "result" / name, "x", [3], np.zeros((1, 8, 8)))
        rec = tmp_path / "result" / "eval" / f"{name}.json"
        rec.parent.mkdir(parents=True, exist_ok=True)
        rec.write_text(json.dumps({"best": {"threshold": best}}))
    r = tmp_path / "result"
    got = source_calibrations(f"{r / 'a'},{r / 'b'},{r / 'c'}", args)  # folders: auto by default
    assert [os.path.basename(f) for f, _, _ in got] == ["a", "b", "c"]
    np.testing.assert_allclose([(off, pw) for _, off, pw in got], [(0, 1), (0.25, 1), (0.15, 1)])
    got = source_calibrations(f"{r / 'a'}:0.05,{r / 'b'}:auto", args)  # explicit ones stay
    np.testing.assert_allclose([off for _, off, _ in got], [0.05, 0.25])  # level: a's 0.35
    assert [off for _, off, _ in source_calibrations(f"{r / 'a'}:0,{r / 'b'}:0.15", args)] == [0, 0.15]
    # power calibration: each source's best threshold t maps to T = 0.35 exactly, 0 and 1 stay
    args.orand_calibration = "power"
    got = source_calibrations(f"{r / 'a'},{r / 'b'},{r / 'c'}:0.1", args)
    assert [off for _, off, _ in got] == [0.0, 0.0, 0.1]  # an explicit offset stays additive
    (_, _, pa), (_, _, pb), (_, _, pc) = got
    assert pa == 1.0 and pc == 1.0
    np.testing.assert_allclose(calibrate(np.array([0.0, 0.10, 1.0]), 0.0, pb), [0, 0.35, 1],
                               atol=1e-6)
    args.orand_calibration = "offset"
    (r / "eval" / "c.json").unlink()
    with pytest.raises(PipelineError, match=r"eval/c.json: missing.*c:<number>"):
        source_calibrations(f"{r / 'a'},{r / 'c'}", args)
    with pytest.raises(PipelineError, match="neither a number nor 'auto'"):
        parse_sources(f"{r / 'a'},{r / 'b'}:x", args)


def write(folder, img_id, keys, high):
    high = np.asarray(high, np.float32)
    save_cam(cam_path(folder, img_id), keys, high[:, ::4, ::4], high)


def test_offset_clip_and_naive(tmp_path):
    write(tmp_path / "a", "x", [3], np.full((1, 8, 8), 0.5))
    write(tmp_path / "b", "x", [3], np.full((1, 8, 8), 0.95))
    args = argparse.Namespace(result_dir="/unused")
    src = [(o.path(args), off) for o, off in
           parse_sources(f"{tmp_path / 'a'}:0,{tmp_path / 'b'}:0.15", args)]
    assert src == [(str(tmp_path / "a"), 0.0), (str(tmp_path / "b"), 0.15)]
    src = [(f, off, 1.0) for f, off in src]
    keys, maps = load_sources(src, "x", [3], 20)
    assert keys.tolist() == [3]
    np.testing.assert_allclose(maps[1][1], 1.0)  # 0.95 + 0.15 clipped
    np.testing.assert_allclose(prob_and([m[1] for m in maps]), 0.5)  # reference: 0.55
    _, raw = load_sources(src, "x", [3], 20, clip=False)
    np.testing.assert_allclose(raw[1][1], 1.1, rtol=1e-3)
    np.testing.assert_allclose(naive_ensemble([m[1] for m in raw]), 1.0, atol=1e-4)
    _, powered = load_sources([(src[0][0], 0.0, 2.0), (src[1][0], 0.0, 1.0)], "x", [3], 20)
    np.testing.assert_allclose(powered[0][1], 0.25)  # 0.5 ** 2
    # why power: six background pixels at 0 stay 0 under OR; +0.15 offsets lift them to 0.62
    bg = [np.zeros(4)] * 6
    assert prob_or([calibrate(m, 0.0, 0.7) for m in bg]).max() == 0
    np.testing.assert_allclose(prob_or([calibrate(m, 0.15) for m in bg]), 1 - 0.85 ** 6)
    with pytest.raises(PipelineError, match="at least two"):
        parse_sources("cam", args)
    with pytest.raises(PipelineError, match="neither a number nor 'auto'"):
        parse_sources("cam,vit_cam:x", args)
    # without ':offset' a registered source takes its registered default (ViT: +0.15)
    assert [(o.name, off) for o, off in parse_sources("cam,vit_cam", args)] == \
        [("cam", 0.0), ("vit_cam", 0.15)]


def test_sources_that_disagree_name_both_files(tmp_path):
    write(tmp_path / "a", "x", [3, 5], np.zeros((2, 8, 8)))
    write(tmp_path / "b", "x", [3, 5], np.zeros((2, 8, 12)))
    src = [(str(tmp_path / "a"), 0, 1), (str(tmp_path / "b"), 0, 1)]
    with pytest.raises(PipelineError, match=r"b/x.npz and .*a/x.npz disagree.*size"):
        load_sources(src, "x", [3, 5], 20)
    write(tmp_path / "c", "x", [3], np.zeros((1, 8, 8)))
    with pytest.raises(PipelineError, match=r"c/x.npz: keys \[3\] differ"):
        load_sources([(str(tmp_path / "a"), 0, 1), (str(tmp_path / "c"), 0, 1)], "x", [3, 5], 20)


@pytest.mark.parametrize("net", [SmallFCN, lambda: FCN8s("none")])
def test_batched_maps_equal_one_map_at_a_time(net):
    torch.manual_seed(0)
    model = net().eval()
    for p in model.parameters():  # FCN's score layers start at zero: make the output non-trivial
        p.data.add_(0.01 * torch.randn_like(p))
    maps = torch.rand(3, 37, 50)
    low, high = orandnet_cams(model, maps, "bce", torch.device("cpu"))
    assert high.shape == (3, 37, 50) and low.shape == (3, 10, 13)
    for k in range(3):
        lo, hi = orandnet_cams(model, maps[k:k + 1], "bce", torch.device("cpu"))
        torch.testing.assert_close(hi[0], high[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lo[0], low[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_both_losses_decrease_on_a_fixed_example(kind):
    torch.manual_seed(0)
    model = SmallFCN(width=8)
    x = torch.rand(2, 1, 24, 24)
    y = (x[:, 0] * torch.tensor([0.9, 0.3])[:, None, None]).clamp(0, 1)  # AND-like targets
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = orand_loss(model(x), y, kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_ce_gives_no_gradient_for_a_single_class_image():
    model = SmallFCN(width=4)
    orand_loss(model(torch.rand(1, 1, 16, 16)), torch.rand(1, 16, 16), "ce").backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())
    model.zero_grad()
    orand_loss(model(torch.rand(1, 1, 16, 16)), torch.rand(1, 16, 16), "bce").backward()
    assert any(p.grad.abs().max() > 0 for p in model.parameters())


FAST = [*TINY, "--orand_iters", "3"]


@pytest.fixture(scope="module")
def orand_run(toy_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("orand")
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(work), *FAST, "--steps",
                     "1-6,import_cams-eval_orandnet"])
    return work


def test_steps_15_to_19(orand_run):
    rows = []
    for name in ("cam", "vit_cam", "naive_cam", "or_cam", "and_cam", "orandnet_cam"):
        with open(orand_run / "result" / "eval" / f"{name}.json") as f:
            rows.append(json.load(f))
    assert [row["name"] for row in rows] == ["cam", "vit_cam", "naive_cam", "or_cam",
                                             "and_cam", "orandnet_cam"]
    fixed = {row["name"]: row["fixed"]["threshold"] for row in rows}
    assert fixed == {"cam": 0.25, "vit_cam": 0.05, "naive_cam": 0.25, "or_cam": 0.25,
                     "and_cam": 0.25, "orandnet_cam": 0.25}
    for row in rows:
        assert row["best"]["miou"] >= row["fixed"]["miou"] and row["list"] == "train"
    # OR >= every source >= AND, pixel by pixel
    res, vit = orand_run / "result" / "cam", orand_run / "result" / "vit_cam"
    for f in os.listdir(res):
        o, a = (load_cam(orand_run / "result" / d / f)["high_res"] for d in ("or_cam", "and_cam"))
        r_, v = load_cam(res / f)["high_res"], np.clip(load_cam(vit / f)["high_res"] + 0.15, 0, 1)
        assert (o >= np.maximum(r_, v) - 1e-3).all() and (a <= np.minimum(r_, v) + 1e-3).all()


def foreign_files(orand_run, tmp_path, layout, shift=0):
    """Write the ResNet CAMs of the run in another project's pickled layout (MCTformer's
    class indices shifted by `shift`, to make them wrong)."""
    src = tmp_path / layout
    os.makedirs(src)
    for f in os.listdir(orand_run / "result" / "cam"):
        c = load_cam(orand_run / "result" / "cam" / f)
        if layout == "irn":
            d = {"keys": c["keys"], "cam": torch.from_numpy(c["cam"]), "high_res": c["high_res"]}
        elif layout == "amn":
            bg = np.full((1,) + c["high_res"].shape[1:], 0.3, np.float32)
            d = {"keys": c["keys"], "high_res": np.concatenate([bg, c["high_res"]])}
        else:
            d = {(int(k) + shift) % 20: m for k, m in zip(c["keys"], c["high_res"])}
        write_pickled_cam(src / f.replace(".npz", ".npy"), d)
    return src


@pytest.mark.parametrize("layout", ["irn", "amn", "mctformer"])
def test_import_round_trip_and_pickle_guard(orand_run, toy_root, tmp_path, layout):
    src = foreign_files(orand_run, tmp_path, layout)
    fmt = "mctformer" if layout == "mctformer" else "irn"
    args = ["--voc12_root", toy_root, "--work_dir", str(orand_run), *FAST, "--steps",
            "import_cams", "--import_dir", str(src), "--import_format", fmt,
            "--import_name", f"imp_{layout}"]
    with pytest.raises(PipelineError, match="pickled.*--trust_pickle"):
        run_sample.main(args)
    assert not os.path.exists(orand_run / "result" / f"imp_{layout}")
    run_sample.main(args + ["--trust_pickle", "--import_title", f"Imported {layout}"])
    with open(orand_run / "result" / f"imp_{layout}" / "source.json") as f:
        assert json.load(f) == {"title": f"Imported {layout}", "format": fmt, "threshold": 0.25,
                                "offset": "auto", "from": str(src)}
    for f in os.listdir(orand_run / "result" / "cam"):
        a = load_cam(orand_run / "result" / "cam" / f)
        b = load_cam(orand_run / "result" / f"imp_{layout}" / f)
        assert a["keys"].tolist() == b["keys"].tolist()
        np.testing.assert_allclose(a["high_res"], b["high_res"], atol=1e-3)
        assert b["cam"].shape == a["cam"].shape


def test_import_refuses_keys_that_are_not_the_labels(orand_run, toy_root, tmp_path):
    src = foreign_files(orand_run, tmp_path, "mctformer", shift=1)
    f = sorted(os.listdir(src))[0]  # the first file import_cams reads
    with pytest.raises(PipelineError, match=f"{f}: classes .* differ from the image's labels"):
        run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *FAST,
                         "--steps", "import_cams", "--import_dir", str(src), "--import_format",
                         "mctformer", "--trust_pickle"])


def test_orand_on_three_sources(orand_run, toy_root):
    shutil.copytree(orand_run / "result" / "cam", orand_run / "result" / "cam_copy",
                    dirs_exist_ok=True)
    work = orand_run
    shutil.rmtree(work / "result" / "or_cam")
    shutil.rmtree(work / "result" / "and_cam")
    # a folder without an offset is calibrated, which needs its evaluation record
    with pytest.raises(PipelineError, match="eval/cam_copy.json: missing"):
        run_sample.main(["--voc12_root", toy_root, "--work_dir", str(work), *FAST, "--steps",
                         "make_orand", "--orand_sources", "cam,vit_cam:0.15,cam_copy"])
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(work), *FAST, "--steps",
                     "make_orand", "--orand_sources", "cam,vit_cam:0.15,cam_copy:0"])
    for f in os.listdir(work / "result" / "cam"):
        r = load_cam(work / "result" / "cam" / f)["high_res"]
        v = np.clip(load_cam(work / "result" / "vit_cam" / f)["high_res"] + 0.15, 0, 1)
        a = load_cam(work / "result" / "and_cam" / f)["high_res"]
        np.testing.assert_allclose(a, r * r * v, atol=2e-3)


def test_train_orandnet_before_make_orand(toy_root, tmp_path):
    with pytest.raises(PipelineError, match="run step make_orand first"):
        run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *FAST,
                         "--steps", "train_orandnet"])


def test_ensemble_study_runs_every_tier_and_resumes(orand_run, toy_root, tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "ensemble_study", os.path.join(os.path.dirname(__file__), "..", "bench", "ensemble_study.py"))
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    res = orand_run / "result"
    shutil.copytree(res / "cam", res / "cam2", dirs_exist_ok=True)
    shutil.copy(res / "eval" / "cam.json", res / "eval" / "cam2.json")
    argv = ["--base", str(orand_run), "--sources", "cam,vit_cam,cam2", "--out",
            str(tmp_path / "s"), "--seg_top", "1", "--", "--voc12_root", toy_root, *FAST]
    study.main(argv)
    out = json.loads((tmp_path / "s" / "study.json").read_text())
    rows = {"+".join(r["sources"]): r for r in out["rows"]}
    assert sorted(rows) == ["cam+cam2", "cam+vit_cam", "cam+vit_cam+cam2", "vit_cam+cam2"]
    assert all(r["or"] and r["and"] and r["orandnet"] and r["pseudo_mask"] for r in rows.values())
    assert sum(r["segmenter"] is not None for r in rows.values()) == 1
    t = {n: json.loads((res / "eval" / f"{n}.json").read_text())["best"]["threshold"]
         for n in ("cam", "vit_cam")}
    top = max(t.values())
    assert rows["cam+cam2"]["offsets"] == [0.0, 0.0]  # same maps, same best threshold
    assert rows["cam+vit_cam"]["offsets"] == pytest.approx([top - t["cam"], top - t["vit_cam"]])
    assert (tmp_path / "s" / "study_pr.png").stat().st_size > 0
    assert "| cam + vit_cam | 2 |" in (tmp_path / "s" / "study.md").read_text()
    capsys.readouterr()
    study.main(argv)  # a rerun finds every set done: no network trains again
    log = capsys.readouterr().out
    assert log.count("resumed from") == 4 * 2 + 1  # ORANDNet and IRN of 4 sets, 1 segmenter
    assert "at iteration 3/3" in log and "at iteration 2/2" in log
