"""ORANDNet inference throughput: all class maps of an image in one batch (this project)
against one map at a time (the reference), same machine, same run. Not a test.

  python bench/bench_orandnet.py --net small_fcn --image 160x120
  python bench/bench_orandnet.py --net fcn8s_vgg16 --image 500x375 --n_images 2
"""
import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from misc.torchutils import resolve_device  # noqa: E402
from net.orandnet import build_orandnet, orandnet_cams  # noqa: E402


def images_per_s(model, maps, dev, batched):
    def one(m):
        if batched:
            orandnet_cams(model, m, "bce", dev)
        else:
            for k in range(len(m)):
                orandnet_cams(model, m[k:k + 1], "bce", dev)
    one(maps[0])  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for m in maps:
        one(m)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return len(maps) / (time.time() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--net", default="small_fcn", choices=["small_fcn", "fcn8s_vgg16"])
    p.add_argument("--image", default="160x120", help="WxH")
    p.add_argument("--classes", type=int, default=3, help="class maps per image")
    p.add_argument("--n_images", type=int, default=10)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    dev = resolve_device(a.device)
    w, h = (int(v) for v in a.image.split("x"))
    torch.manual_seed(0)
    model = build_orandnet(a.net, "none").to(dev).eval()
    maps = [torch.rand(a.classes, h, w) for _ in range(a.n_images)]
    batched = images_per_s(model, maps, dev, True)
    single = images_per_s(model, maps, dev, False)
    print(f"| {a.net} | {a.image} | {a.classes} | {dev} ({platform.node()}, "
          f"{torch.get_num_threads()} threads) | {batched:.2f} | {single:.2f} | "
          f"{batched / single:.2f}x |")


if __name__ == "__main__":
    main()
