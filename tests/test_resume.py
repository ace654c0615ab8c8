"""No lost work: a trainer killed with SIGKILL resumes to the planned iteration with the
weights of an uninterrupted run; a killed inference step leaves only whole files and
its rerun completes; checkpoints of another run are refused."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.errors import PipelineError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = TINY


def cmd(root, work, *extra):
    return [sys.executable, "run_sample.py", "--voc12_root", root, "--work_dir", str(work),
            *BASE, *extra]


def kill_when(proc, cond, timeout=120):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, "finished before it could be killed: " + proc.stdout.read()
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_trainer_resumes_to_the_planned_iteration(toy_root, tmp_path):
    train = ["--steps", "train_cam", "--cam_iters", "12", "--ckpt_every", "3"]
    subprocess.run(cmd(toy_root, tmp_path / "ref", *train), cwd=ROOT, check=True,
                   capture_output=True)
    work = tmp_path / "killed"
    ckpt = work / "sess" / "cam.ckpt"
    p = subprocess.Popen(cmd(toy_root, work, *train), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    kill_when(p, ckpt.exists)
    it = torch.load(ckpt, weights_only=True)["iter"]
    assert 0 < it < 12 and not (work / "sess" / "cam.pth").exists()
    r = subprocess.run(cmd(toy_root, work, *train, "--resume"), cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ckpt} at iteration {it}/12" in r.stdout
    assert torch.load(ckpt, weights_only=True)["iter"] == 12
    a = torch.load(work / "sess" / "cam.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "ref" / "sess" / "cam.pth", weights_only=True)["model"]
    for k in a:  # data order and augmentation depend on (seed, epoch, index) only
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # the loss curve survives the kill: one entry per iteration, as in the reference run
    curves = [json.loads((w / "sess" / "cam.curve.json").read_text()) for w in (work, tmp_path / "ref")]
    assert curves[0]["iter"] == curves[1]["iter"] == list(range(12))
    np.testing.assert_allclose(curves[0]["loss"], curves[1]["loss"], rtol=1e-4)
    np.testing.assert_allclose(curves[0]["lr"], curves[1]["lr"])
    assert curves[0]["lr"][0] > curves[0]["lr"][-1] > 0  # poly decay, the lr of each iteration


def test_killed_inference_leaves_whole_files_and_rerun_completes(toy_root, tmp_path):
    subprocess.run(cmd(toy_root, tmp_path, "--steps", "train_cam", "--cam_iters", "1"),
                   cwd=ROOT, check=True, capture_output=True)
    cams = tmp_path / "result" / "cam"
    done = lambda: len([f for f in os.listdir(cams) if f.endswith(".npz") and ".tmp" not in f])  # noqa
    infer = ["--steps", "make_cam", "--infer_list", "train_aug", "--cam_scales", "1.0,1.5,2.0"]
    p = subprocess.Popen(cmd(toy_root, tmp_path, *infer), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    kill_when(p, lambda: cams.exists() and done() >= 3)
    assert done() < 16
    for f in os.listdir(cams):
        if ".tmp" not in f:
            with np.load(cams / f, allow_pickle=False) as z:
                assert z["high_res"].ndim == 3
    r = subprocess.run(cmd(toy_root, tmp_path, *infer), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert done() == 16 and not [f for f in os.listdir(cams) if ".tmp" in f]


def test_checkpoint_of_another_run_is_refused(toy_root, tmp_path):
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *BASE, "--steps", "train_cam"]
    run_sample.main(args + ["--cam_iters", "2"])
    with pytest.raises(PipelineError, match="max_iters: file has 2, this run wants 4"):
        run_sample.main(args + ["--cam_iters", "4", "--resume"])
    with pytest.raises(PipelineError, match="backbone"):
        run_sample.main(args + ["--cam_iters", "2", "--resume", "--cam_backbone", "resnet34"])


def test_cli_prints_one_clear_line_and_exit_code_2(tmp_path):
    r = subprocess.run([sys.executable, "run_sample.py", "--voc12_root", str(tmp_path / "x"),
                        "--steps", "1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.lstrip().startswith("error: ") and "Traceback" not in r.stderr
    assert str(tmp_path / "x") in r.stderr
