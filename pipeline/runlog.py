"""The record of every run: each invocation of run_sample appends one JSON line to
result/runs.jsonl with the resolved flags, the command line, versions, device, world
size, git commit and dirtiness, seed, start and end time, steps run and how it ended.
Reproduction disputes start from here."""
import json
import os
import platform
import subprocess
import sys
import time

from misc.torchutils import dist_env

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*cmd):
    try:
        out = subprocess.run(["git", "-C", PROJECT, *cmd], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or not a checkout (an unpacked release)


def versions():
    """Python and library versions, CUDA and cuDNN as torch sees them."""
    import numpy
    import timm
    import torch
    import torchvision
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)  # torch.device and friends


def start(args, argv):
    """The run's record before any step: flags after the preset, environment, commit."""
    import torch
    dev = args.device
    gpu = torch.cuda.get_device_name(dev) if getattr(dev, "type", "") == "cuda" else None
    status = _git("status", "--porcelain")
    return {"start": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(argv),
            "command": " ".join([os.path.basename(sys.executable), "run_sample.py", *argv]),
            "flags": {k: _jsonable(v) for k, v in sorted(vars(args).items())},
            "seed": args.seed, "preset": args.preset, "versions": versions(),
            "device": str(dev), "gpu": gpu, "world_size": dist_env()[1],
            "host": platform.node(), "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": None if status is None else bool(status), "steps": []}


def finish(record, result_dir, status):
    """Append the finished record (rank 0) to result/runs.jsonl: one line per run. A
    line is written with one call, so a crash never leaves half a record."""
    if dist_env()[0] != 0:
        return
    record = {**record, "end": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": status}
    os.makedirs(result_dir, exist_ok=True)
    with open(os.path.join(result_dir, "runs.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
