"""The random walk at VOC size (a 500x375 image -> a 125x94 stride-4 grid, 3 classes):
the sparse transition applied 2^8 times (this project) against the reference's dense
(HW)x(HW) matrix squared 8 times; time and peak memory of each, each method in a fresh
process, same machine, same run. Not a test.

  python bench/bench_walk.py            # both methods, prints a table row each
"""
import argparse
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from net.irn import random_walk, transition_matrix  # noqa: E402


def dense_walk(cams, boundary, radius, beta, exp_times):
    """The reference's method: dense T, squared exp_times times, then x T."""
    c, h, w = cams.shape
    t = transition_matrix(boundary, radius, beta).to_dense().T.contiguous()
    for _ in range(exp_times):
        t = t @ t
    return ((cams * (1 - boundary)[None]).reshape(c, h * w) @ t).reshape(c, h, w)


def one(method, device):
    torch.manual_seed(0)
    dev = torch.device(device)
    boundary = (torch.rand(94, 125) ** 4).to(dev)
    cams = torch.rand(3, 94, 125).to(dev)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = (random_walk if method == "sparse" else dense_walk)(cams, boundary, 5, 10.0, 8)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else 0
    print(f"{method} {dt:.3f} {(peak - base) / 1024:.1f} {peak / 1024:.1f} {gpu:.1f} "
          f"{float(out.sum()):.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", choices=["sparse", "dense"])
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.method:
        return one(a.method, a.device)
    rows = {}
    for m in ("sparse", "dense"):
        r = subprocess.run([sys.executable, __file__, "--method", m, "--device", a.device],
                           capture_output=True, text=True, check=True)
        rows[m] = r.stdout.split()
    print(f"# random walk 125x94, 3 classes, radius 5, beta 10, 2^8 steps, {a.device}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print("| method | time s | peak RSS growth MiB | peak RSS MiB | peak CUDA MiB | sum of output |")
    print("|---|---|---|---|---|---|")
    for m, (_, t, grow, peak, gpu, s) in rows.items():
        print(f"| {m} | {t} | {grow} | {peak} | {gpu} | {s} |")
    ts, td = float(rows["sparse"][1]), float(rows["dense"][1])
    gs, gd = float(rows["sparse"][2]), float(rows["dense"][2])
    print(f"speed-up {td / ts:.0f}x, memory {gd / max(gs, 1e-9):.0f}x less (RSS growth)")


if __name__ == "__main__":
    main()
