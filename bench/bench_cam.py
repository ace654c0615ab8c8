"""Throughput of the CAM classifier: training images/s (the shared loop's step: forward,
backward, SGD) and multi-scale CAM inference images/s, with peak memory. On CUDA it
compares fp32 with bf16 autocast + channels_last. Not a test: run `make bench`.

  python bench/bench_cam.py --backbone resnet18 --crop 128 --image 160x120   # toy size
  python bench/bench_cam.py --backbone resnet50 --crop 512 --image 500x375   # VOC size
"""
import argparse
import os
import platform
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from misc.torchutils import autocast, resolve_device  # noqa: E402
from misc.classifier import multilabel_loss  # noqa: E402
from net.resnet_cam import CAMNet, multiscale_cams  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_train(model, dev, batch, crop, iters, fast):
    model.train().to(dev)
    x = torch.randn(batch, 3, crop, crop, device=dev)
    y = (torch.rand(batch, 20, device=dev) < 0.1).float()
    if fast and dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ctx = autocast(dev) if fast else torch.autocast(dev.type, enabled=False)
    for i in range(iters + 2):  # 2 warm-up iterations
        if i == 2:
            sync(dev)
            t0 = time.time()
        with ctx:
            loss = multilabel_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)
    return batch * iters / (time.time() - t0)


@torch.no_grad()
def bench_cams(model, dev, h, w, n, scales, fast):
    model.eval().to(dev)
    imgs = [torch.randn(3, round(h * s), round(w * s), device=dev) for s in scales]
    ctx = autocast(dev) if fast else torch.autocast(dev.type, enabled=False)
    for i in range(n + 1):
        if i == 1:
            sync(dev)
            t0 = time.time()
        with ctx:
            multiscale_cams(model, imgs, (h, w), [0, 5])
    sync(dev)
    return n / (time.time() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--image", default="160x120", help="WxH of CAM inference images")
    p.add_argument("--n_images", type=int, default=5)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    dev = resolve_device(a.device)
    w, h = (int(v) for v in a.image.split("x"))
    modes = [False, True] if dev.type == "cuda" else [False]
    print(f"# {platform.node()} {dev} {torch.cuda.get_device_name() if dev.type == 'cuda' else platform.processor()} "
          f"threads={torch.get_num_threads()} torch={torch.__version__} {time.strftime('%Y-%m-%d')}")
    print("| backbone | mode | train img/s (crop, batch) | CAM img/s (image, 4 scales x flip) | peak RSS GiB | peak CUDA GiB |")
    print("|---|---|---|---|---|---|")
    for fast in modes:
        torch.manual_seed(0)
        model = CAMNet(a.backbone, freeze_bn=True, freeze_stem=True)
        tr = bench_train(model, dev, a.batch, a.crop, a.iters, fast)
        cm = bench_cams(model, dev, h, w, a.n_images, (1.0, 0.5, 1.5, 2.0), fast)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        gpu = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        mode = "bf16+channels_last" if fast else "fp32"
        print(f"| {a.backbone} | {mode} | {tr:.1f} ({a.crop}, {a.batch}) | {cm:.2f} ({a.image}) "
              f"| {rss:.2f} | {gpu:.2f} |")


if __name__ == "__main__":
    main()
