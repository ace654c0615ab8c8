"""The README's bad-input table, row by row, at the level of a step: each gives a
PipelineError naming the file and leaves earlier outputs intact. (Reader-level and
file-format-level cases live in test_voc12.py and test_cam_io.py.)"""
import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import run_sample
from conftest import TINY, write_pickled_cam
from misc.errors import PipelineError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def done(toy_root, tmp_path):
    """(voc root copy, work dir) after steps 1-3."""
    root = str(tmp_path / "VOC2012")
    shutil.copytree(toy_root, root)
    work = tmp_path / "work"
    run(root, work, "--steps", "1-3")
    return root, work


def run(root, work, *extra):
    return run_sample.main(["--voc12_root", root, "--work_dir", str(work), *TINY, *extra])


def snapshot(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_corrupt_jpeg_in_a_loader_worker_gives_one_clear_line(done):
    root, work = done
    bad = os.path.join(root, "JPEGImages", "toy_000003.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    weights = open(work / "sess" / "cam.pth", "rb").read()
    r = subprocess.run([sys.executable, "run_sample.py", "--voc12_root", root, "--work_dir",
                        str(work), *TINY, "--num_workers", "1", "--cam_iters", "8",
                        "--steps", "train_cam"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and bad in errors[0] and "Traceback" not in r.stderr
    assert open(work / "sess" / "cam.pth", "rb").read() == weights  # earlier weights intact


def test_nan_cam_stops_eval_and_keeps_the_earlier_report(done):
    root, work = done
    cam = work / "result" / "cam" / "toy_000002.npz"
    with np.load(cam) as z:
        d = dict(z)
    d["high_res"][0, 0, 0] = np.nan
    np.savez(cam, **d)
    report = open(work / "result" / "eval" / "cam.json").read()
    with pytest.raises(PipelineError, match=f"{cam}.*NaN or Inf"):
        run(root, work, "--steps", "eval_cam")
    assert open(work / "result" / "eval" / "cam.json").read() == report


def test_pickled_cam_in_the_folder(done):
    root, work = done
    cam = work / "result" / "cam" / "toy_000002.npz"
    write_pickled_cam(cam, {"keys": [0]})
    with pytest.raises(PipelineError, match="pickled.*import_cams"):
        run(root, work, "--steps", "eval_cam")


def test_cam_keys_that_do_not_match_the_labels(done):
    root, work = done
    cam = work / "result" / "cam" / "toy_000002.npz"
    with np.load(cam) as z:
        d = dict(z)
    d["keys"] = (d["keys"] + 1) % 20
    np.savez(cam, **d)
    with pytest.raises(PipelineError, match="differ from the image's labels"):
        run(root, work, "--steps", "eval_cam")


def test_disk_full_during_make_cam_keeps_finished_files(done, monkeypatch):
    root, work = done
    cams = work / "result" / "cam"
    for f in sorted(os.listdir(cams))[:3]:
        os.remove(cams / f)
    before = snapshot(cams)
    real = np.savez_compressed

    def full(f, **arrays):
        real(f, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(PipelineError, match="no space left on device"):
        run(root, work, "--steps", "make_cam")
    assert snapshot(cams) == before  # no new partial file, old files untouched


def test_mask_with_label_ids_out_of_range_during_eval(done):
    root, work = done
    from misc.imutils import read_label, save_label_png
    path = os.path.join(root, "SegmentationClassAug", "toy_000004.png")
    m = read_label(path).copy()
    m[0, 0] = 42
    save_label_png(path, m, palette=False)
    with pytest.raises(PipelineError, match=f"{path}.*42"):
        run(root, work, "--steps", "eval_cam")


def test_list_with_an_id_without_image(done, tmp_path):
    root, work = done
    lst = tmp_path / "list.txt"
    lst.write_text("toy_000001\nno_such_id\n")
    with pytest.raises(PipelineError, match="no_such_id.jpg"):
        run(root, work, "--steps", "make_cam", "--infer_list", str(lst))
