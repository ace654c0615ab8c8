"""torchrun DDP on CPU (gloo): ranks agree, the loss matches a single process with the
same global batch, and sharded inference writes what a single process writes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def sh(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_two_ranks_agree_and_match_single_process(toy_root, tmp_path):
    script = os.path.join(ROOT, "tests", "ddp_script.py")
    sh(TORCHRUN + [script, toy_root, str(tmp_path / "ddp"), "2", "3"])
    sh([sys.executable, script, toy_root, str(tmp_path / "single"), "4", "3"])
    r0 = torch.load(tmp_path / "ddp" / "rank0_of2.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1_of2.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "rank0_of1.pt", weights_only=True)
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # the logged loss is the global-batch mean: the same curve as one process
    np.testing.assert_allclose(r0["losses"], one["losses"], rtol=1e-3)
    for k, v in one["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(r0["model"][k], v, rtol=1e-3, atol=1e-4)


def test_two_process_make_cam_writes_the_single_process_files(toy_root, tmp_path):
    base = ["--voc12_root", toy_root, *TINY, "--cam_batch_size", "2", "--cam_scales", "1.0,0.5"]
    sh([sys.executable, "run_sample.py", "--work_dir", str(tmp_path / "one"), *base,
        "--steps", "train_cam,make_cam"])
    two = tmp_path / "two"
    os.makedirs(two)
    os.symlink(tmp_path / "one" / "sess", two / "sess")  # the same weights
    r = sh(TORCHRUN + ["run_sample.py", "--work_dir", str(two), *base,
                       "--steps", "make_cam,eval_cam"])
    assert "mIoU" in r.stdout
    a, b = tmp_path / "one" / "result" / "cam", two / "result" / "cam"
    assert sorted(os.listdir(a)) == sorted(os.listdir(b)) and len(os.listdir(a)) == 8
    for f in os.listdir(a):
        with np.load(a / f, allow_pickle=False) as x, np.load(b / f, allow_pickle=False) as y:
            for k in ("keys", "cam", "high_res"):
                np.testing.assert_allclose(x[k].astype(np.float32), y[k].astype(np.float32),
                                           atol=2e-3)


@pytest.mark.parametrize("backend", ["gloo"])
def test_backend_is_gloo_on_cpu(backend, monkeypatch):
    import torch.distributed as dist
    from misc import torchutils
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b: seen.setdefault("backend", b))
    torchutils.resolve_device("cpu")
    assert seen["backend"] == backend
