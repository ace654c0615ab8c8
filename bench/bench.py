"""The benchmark suite (`make bench`): images/s and peak memory of every stage at toy size
(the toy preset's models) and at VOC size (the paper preset's models on 500x375 images),
FLOP/s of the trainers (PyTorch's flop counter; on CUDA as a share of the card's bf16
peak), data loading in and out of the measurement, the side-by-side ratios (batched vs
per-map ORANDNet, sparse vs dense random walk) and an estimate of the full paper-preset
VOC run from the measured throughputs; at COCO size (640x480, 80 classes) what differs from
VOC: the full-image inference stages, label loading for 82k images, the 80-class
evaluation, and the paper_coco estimate -> bench/RESULTS.md. Each case runs in a fresh
process, so its peak memory is its own. Every case's last result is kept in
bench/results.json, so a run of some cases updates only their rows. Not a test.

  python bench/bench.py                      # every case, writes bench/RESULTS.md
  python bench/bench.py --only train_cam     # cases whose 'name:size' contains a string
  python bench/bench.py --only :coco         # the COCO-size cases
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from misc.cam_io import strided_size  # noqa: E402
from misc.torchutils import autocast, resolve_device  # noqa: E402
from pipeline.classifier import multilabel_loss  # noqa: E402
from pipeline.config import PRESETS  # noqa: E402
from voc12.classes import VOC_CLASSES  # noqa: E402

TOY, PAPER, PAPER_COCO = PRESETS["toy"], PRESETS["paper"], PRESETS["paper_coco"]
SIZES = {"toy": (120, 160), "voc": (375, 500), "coco": (480, 640)}  # (H, W) of each size's images
PRESET_OF = {"toy": TOY, "voc": PAPER, "coco": PAPER_COCO}
# class count and the classes of the benchmark image (COCO averages 2.9 per image, VOC 1.5)
CLASSES_OF = {"toy": (len(VOC_CLASSES), [0, 5]), "voc": (len(VOC_CLASSES), [0, 5]),
              "coco": (80, [0, 5, 15])}
N_CLASSES, KEYS = CLASSES_OF["voc"]  # set per case by run_case (one case per process)
VOC_IMAGES = {"train": 1464, "val": 1449, "test": 1456, "train_aug": 10582}
COCO_IMAGES = {"train": 82081, "val": 40137}  # the annotated images of COCO 2014
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0,
                    "4090": 165.2, "V100": 125.0}  # dense tensor-core bf16 (fp16 for V100)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, dev, n, per_call, warmup=1):
    """Images/s of `fn` over n timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return per_call * n / (time.perf_counter() - t0)


def count_flops(fn):
    """FLOPs of one call of fn (forward + backward ops), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def train_case(model, make_batch, loss_fn, batch, dev, iters, loader=None, workers=0):
    """One optimiser step per call as in the shared loop (bf16 + channels_last on CUDA).
    Returns img/s on a fixed batch on the device (data loading excluded), FLOPs per image
    and, with `loader` (an iterator of CPU batches), img/s with loading included."""
    model.train().to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                          momentum=0.9)
    def to_dev(b):  # as the shared loop does
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        if dev.type == "cuda" and "img" in b:
            b["img"] = b["img"].contiguous(memory_format=torch.channels_last)
        return b
    fixed = to_dev(make_batch())

    def step(b=None, amp=True):
        b = b or fixed
        with autocast(dev) if amp else contextlib.nullcontext():
            loss = loss_fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    flops = count_flops(step)  # also a warm-up step
    out = {"img_s": rate(step, dev, iters, batch, warmup=2), "gflop_per_img": flops / batch / 1e9}
    if dev.type == "cuda":  # the same step without autocast: what bf16 buys
        out["img_s_fp32"] = rate(lambda: step(amp=False), dev, iters, batch, warmup=2)
    if loader is not None:
        # past the batches the workers prefetched, so that loading is really timed
        w = max(workers, 1)
        out["img_s_with_loading"] = rate(lambda: step(to_dev(next(loader))), dev,
                                         max(iters, 3 * w), batch, warmup=2 * w)
    return out


def infer_case(fn, dev, n=2):
    with torch.no_grad():
        return {"img_s": rate(fn, dev, n, 1)}


def voc_loader(crop, resize_long, batch, workers, n=24, jitter=(0, 0, 0, 0)):
    """Batches of the real classifier loader (JPEG decode, resize, flip, colour jitter,
    crop) over a toy VOC generated at 500x375, cycled forever."""
    from voc12.dataloader import VOC, TrainDataset
    from voc12.toy import generate
    tmp = tempfile.mkdtemp(prefix="bench_voc_")
    voc = VOC(generate(tmp, n_train=n, n_aug=0, n_val=1, n_test=0, size=500, quiet=True))
    data = TrainDataset(voc, voc.ids("train"), crop, resize_long, jitter=jitter)
    keys = [[(e, i) for i in range(k, k + batch)] for e in range(1000)
            for k in range(0, n - batch + 1, batch)]
    dl = torch.utils.data.DataLoader(data, batch_sampler=keys, num_workers=workers,
                                     pin_memory=torch.cuda.is_available())
    return iter(dl)


# ---------------------------------------------------------------- the cases
def classifier_case(prefix, make_model, size, dev, a, cpu_voc_batch):
    """A classifier trainer (prefix cam or vit) with its preset's batch and crop; at VOC
    size also fed by the real loader."""
    toy = size == "toy"
    p = PRESET_OF[size]
    batch = p[f"{prefix}_batch_size"] if toy or dev.type == "cuda" else cpu_voc_batch
    crop = p["cam_crop_size"] if prefix == "cam" else p["vit_img_size"]
    loader = None if toy else voc_loader(crop, p[f"{prefix}_resize_long"], batch, a.workers,
                                         jitter=p[f"{prefix}_color_jitter"])
    r = train_case(make_model(p), lambda: {"img": torch.randn(batch, 3, crop, crop),
                                           "label": (torch.rand(batch, N_CLASSES) < 0.1).float()},
                   lambda m, b: multilabel_loss(m(b["img"]), b["label"]), batch, dev,
                   a.iters, loader, a.workers)
    return {**r, "model": f"{p[f'{prefix}_backbone']} crop {crop} batch {batch}"}


def _cam_net(p):
    from net.resnet_cam import CAMNet
    return CAMNet(N_CLASSES, p["cam_backbone"], "none", p["cam_freeze_bn"], p["cam_freeze_stem"],
                  p["cam_detach_stage2"])


def c_train_cam(size, dev, a):
    return classifier_case("cam", _cam_net, size, dev, a, cpu_voc_batch=2)


def c_make_cam(size, dev, a):
    from net.resnet_cam import CAMNet, multiscale_cams
    p = PRESET_OF[size]
    h, w = SIZES[size]
    model = CAMNet(N_CLASSES, p["cam_backbone"], "none").eval().to(dev)
    imgs = [torch.randn(3, round(h * s), round(w * s), device=dev) for s in p["cam_scales"]]

    def fn():  # fp32, as the step
        multiscale_cams(model, imgs, (h, w), KEYS)
    return {**infer_case(fn, dev), "model": f"{p['cam_backbone']}, {len(imgs)} scales x flip, {len(KEYS)} classes"}


def _vit(p):
    from net.vit_cam import ViTClassifier
    return ViTClassifier(p["vit_backbone"], p["vit_img_size"], N_CLASSES, "none",
                         p["vit_patch_size"], p["vit_depth"], p["vit_freeze_patch_embed"])


def c_train_vit(size, dev, a):
    return classifier_case("vit", _vit, size, dev, a, cpu_voc_batch=1)


def c_make_vit_cam(size, dev, a):
    from net.vit_cam import vit_cams
    p = PRESET_OF[size]
    model = _vit(p).eval().to(dev)
    x = torch.randn(1, 3, p["vit_img_size"], p["vit_img_size"], device=dev)

    def fn():
        with autocast(dev):
            vit_cams(model, x, KEYS, p["vit_cam_method"])
    return {"img_s": rate(fn, dev, 2, 1), "model": f"{p['vit_backbone']}, {p['vit_cam_method']}, {len(KEYS)} classes"}


def c_vit_cam_memory(size, dev, a):
    """Peak memory of one image's ViT CAMs with 1, 3 and 6 classes: one forward, then one
    backward and one relevance pass per class, so the peak must not grow with the class
    count. CUDA: the peak allocated per image; CPU: the process's peak RSS after each
    image (a high-water mark, so it can only stay or grow)."""
    from net.vit_cam import vit_cams
    p = PRESET_OF[size]
    model = _vit(p).eval().to(dev)
    x = torch.randn(1, 3, p["vit_img_size"], p["vit_img_size"], device=dev)
    peaks = {}
    for k in (1, 3, 6):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        vit_cams(model, x, list(range(k)), p["vit_cam_method"])
        sync(dev)
        peaks[k] = {"s": time.perf_counter() - t0, "gib": torch.cuda.max_memory_allocated() / 2**30
                    if dev.type == "cuda" else
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return {"img_s": 1 / peaks[1]["s"], "by_classes": peaks,
            "model": f"{p['vit_backbone']} at {p['vit_img_size']} px, {p['vit_cam_method']}"}


def c_matmul_peak(size, dev, a):
    """The card's achievable bf16 tensor-core rate: an 8192^3 bf16 product (CUDA only)."""
    if dev.type != "cuda":
        return {"img_s": 0.0, "tflops": None, "model": "no CUDA device"}
    n = 8192
    x, y = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        x @ y
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(10):
        x @ y
    sync(dev)
    tf = 2 * n ** 3 * 10 / (time.perf_counter() - t0) / 1e12
    return {"img_s": 0.0, "tflops": tf, "model": f"{n}^3 bf16 matmul: {tf:.0f} TFLOP/s"}


def c_train_orandnet(size, dev, a):
    from net.orandnet import build_orandnet, orand_loss
    p = PRESET_OF[size]
    h, w = SIZES[size]
    r = train_case(build_orandnet(p["orand_net"]),
                   lambda: {"or": torch.rand(2, 1, h, w), "and": torch.rand(2, h, w)},
                   lambda m, b: orand_loss(m(b["or"]), b["and"], "bce"), 1, dev, a.iters)
    return {**r, "model": f"{p['orand_net']}, one image of 2 class maps per step"}


def c_make_orandnet_cam(size, dev, a):
    from net.orandnet import build_orandnet, orandnet_cams
    p = PRESET_OF[size]
    h, w = SIZES[size]
    model = build_orandnet(p["orand_net"]).eval().to(dev)
    maps = torch.rand(3, h, w)
    batched = infer_case(lambda: orandnet_cams(model, maps, "bce", dev), dev)["img_s"]
    per_map = infer_case(lambda: [orandnet_cams(model, maps[k:k + 1], "bce", dev)
                                  for k in range(len(maps))], dev)["img_s"]
    return {"img_s": batched, "per_map_img_s": per_map, "ratio": batched / per_map,
            "model": f"{p['orand_net']}, 3 class maps in one batch (per map: {per_map:.2f} img/s)"}


def c_cam_to_ir_label(size, dev, a):
    from misc.crf import confident_labels
    p = PRESET_OF[size]
    h, w = SIZES[size]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    maps = rng.random((len(KEYS), h, w), dtype=np.float32)
    fn = lambda: confident_labels(img, maps, KEYS, p["conf_fg_thres"], p["conf_bg_thres"])  # noqa
    one = rate(fn, torch.device("cpu"), 2, 1)
    # the step runs it in its --num_workers loader processes: one per CPU here
    return {"img_s": one * a.workers, "per_process_img_s": one,
            "model": f"2 dense CRFs of {len(KEYS) + 1} labels (numpy, CPU) in {a.workers} processes "
                     f"({one:.3g} img/s each)"}


def _boundary_net(p):
    from net.irn import BoundaryNet, make_trunk, trunk_backbone
    bb = trunk_backbone(p["irn_trunk"], p["cam_backbone"], p["irn_backbone"])
    return BoundaryNet(make_trunk("none", bb, N_CLASSES)), bb


def c_train_irn(size, dev, a):
    from net.irn import affinity_loss, stride4_labels
    toy = size == "toy"
    p = PRESET_OF[size]
    batch = p["irn_batch_size"] if toy or dev.type == "cuda" else 2
    crop, radius = p["irn_crop_size"], p["irn_radius"]
    model, bb = _boundary_net(p)

    def make_batch():
        label = torch.randint(0, 3, (batch, crop, crop))
        label[:, :, :crop // 8] = 255
        return {"img": torch.randn(batch, 3, crop, crop), "label": label}
    r = train_case(model, make_batch, lambda m, b: affinity_loss(
        m(b["img"]), stride4_labels(b["label"]), radius, p["irn_path_cells"],
        p["irn_pair_region"]), batch, dev, a.iters)
    return {**r, "model": f"boundary net on {bb}, crop {crop} batch {batch}, radius {radius}"}


def c_make_sem_seg_labels(size, dev, a):
    from net.irn import boundary_map, random_walk
    p = PRESET_OF[size]
    h, w = SIZES[size]
    model, bb = _boundary_net(p)
    model.eval().to(dev)
    x = torch.randn(3, h, w, device=dev)
    cams = torch.rand(len(KEYS), *strided_size(h, w), device=dev)

    def fn():
        e = boundary_map(model, x, p["irn_infer_pad"])
        random_walk(cams, e, p["walk_radius"], p["beta"], p["exp_times"], p["irn_path_cells"])
    return {**infer_case(fn, dev), "model": f"boundary net ({bb}, x flip, padded to "
            f"{p['irn_infer_pad']}) + sparse walk 2^{p['exp_times']}"}


def _seg(p):
    from net.deeplab import DeepLabLargeFOV
    return DeepLabLargeFOV(N_CLASSES + 1, p["seg_backbone"], "none", p["seg_fov"],
                           p["seg_width"], p["seg_dropout"])


def c_train_seg(size, dev, a):
    toy = size == "toy"
    p = PRESET_OF[size]
    batch = p["seg_batch_size"] if toy or dev.type == "cuda" else 2
    crop = p["seg_crop_size"]
    r = train_case(_seg(p), lambda: {"img": torch.randn(batch, 3, crop, crop),
                                     "label": torch.randint(0, N_CLASSES + 1, (batch, crop, crop))},
                   lambda m, b: F.cross_entropy(m(b["img"]), b["label"], ignore_index=255),
                   batch, dev, a.iters)
    return {**r, "model": f"DeepLab-LargeFOV {p['seg_backbone']} OS8, crop {crop} batch {batch}"}


def c_make_seg(size, dev, a):
    from net.deeplab import seg_probs
    p = PRESET_OF[size]
    h, w = SIZES[size]
    model = _seg(p).eval().to(dev)
    imgs = [torch.randn(3, round(h * s), round(w * s)) for s in p["seg_infer_scales"]]
    raw = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)

    with torch.no_grad():
        net = rate(lambda: seg_probs(model, imgs, (h, w), dev), dev, 3, 1)
        probs = seg_probs(model, imgs, (h, w), dev).cpu().numpy()
    name = f"{p['seg_backbone']}, {len(imgs)} scales x flip"
    if not p["seg_crf"]:
        return {"img_s": net, "model": name}
    from misc.crf import crf_probs
    crf = rate(lambda: crf_probs(raw, probs), torch.device("cpu"), 1, 1)
    # the step runs the CRF in --num_workers processes while the device goes on
    return {"img_s": min(net, crf * a.workers), "net_img_s": net, "per_process_img_s": crf,
            "model": f"{name} ({net:.3g} img/s) + CRF in {a.workers} processes ({crf:.3g} img/s each)"}


def c_walk(method):
    def case(size, dev, a):
        from net.irn import random_walk, transition_matrix
        h, w = strided_size(*SIZES[size])
        torch.manual_seed(0)
        edge, cams = (torch.rand(h, w) ** 4).to(dev), torch.rand(3, h, w).to(dev)
        if method == "sparse":
            fn = lambda: random_walk(cams, edge, 5, 10.0, 8)  # noqa: E731
        else:  # the reference: dense (HW)x(HW) transition squared 8 times
            def fn():
                t = transition_matrix(edge, 5, 10.0).to_dense().T.contiguous()
                for _ in range(8):
                    t = t @ t
                return (cams * (1 - edge)[None]).reshape(3, -1) @ t
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ips = rate(fn, dev, 1, 1, warmup=0)
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 2**20
        return {"img_s": ips, "rss_growth_gib": growth, "model": f"{method} walk on {h}x{w}"}
    return case


def c_loader(size, dev, a):
    """The classifier loader alone at 1, 2 and all CPUs' worth of workers: how many img/s
    the CPU side can feed whatever the device."""
    h = {}
    for w in sorted({0, 2, os.cpu_count() or 1}):
        it = voc_loader(PAPER["cam_crop_size"], PAPER["cam_resize_long"], 8, w,
                        jitter=PAPER["cam_color_jitter"])
        # drain what the workers prefetched, then time 10 batches per worker
        h[w] = rate(lambda: next(it), torch.device("cpu"), 10 * max(w, 1), 8,  # noqa: B023
                    warmup=2 * max(w, 1))
    return {"img_s": max(h.values()), "by_workers": h,
            "model": "decode + resize + flip + jitter + crop, workers " +
                     ", ".join(f"{w}: {v:.0f} img/s" for w, v in h.items())}


def _coco_json(path, n_images, anns_per_image=7.37, poly_len=40):
    """A synthetic instances JSON of COCO's size: n_images 640x480 images, COCO's instance
    count (604,907 for train2014's 82,783 images) with polygons of poly_len numbers, about
    COCO's bytes per instance. Written as text: no Python objects of its size are built."""
    rng = np.random.default_rng(0)
    poly = "[[" + ",".join(f"{v:.2f}" for v in rng.uniform(0, 480, poly_len)) + "]]"
    per = rng.poisson(anns_per_image, n_images)
    cats = rng.integers(1, 81, int(per.sum()))
    with open(path, "w") as f:
        f.write('{"images": [' + ",".join(
            f'{{"id": {k}, "file_name": "COCO_train2014_{k:012d}.jpg", "height": 480, '
            f'"width": 640}}' for k in range(n_images)) + '], "annotations": [')
        n = 0
        for k, m in enumerate(per):
            for _ in range(m):
                f.write(("," if n else "") + f'{{"id": {n}, "image_id": {k}, "category_id": '
                        f'{cats[n]}, "iscrowd": 0, "area": 100.0, "bbox": [1.0, 2.0, 3.0, 4.0], '
                        f'"segmentation": {poly}}}')
                n += 1
        f.write('], "categories": [' + ",".join(f'{{"id": {c}, "name": "c{c}"}}'
                                                for c in range(1, 81)) + "]}")
    return int(per.sum())


def c_labels(size, dev, a):
    """Image-level labels of COCO's 82,081 train images: the instance JSON parsed into the
    reader's index (cold: the first run), the cached index read back and every label
    handed out (warm: every later run), and the VOC-layout reader's label cache at the
    same count (read once per run; it used to be decompressed once per image)."""
    from voc12.coco import COCO
    from voc12.dataloader import VOC
    n = COCO_IMAGES["train"]
    tmp = tempfile.mkdtemp(prefix="bench_labels_")
    root, cache = os.path.join(tmp, "coco"), os.path.join(tmp, "result")
    os.makedirs(os.path.join(root, "annotations"))
    path = os.path.join(root, "annotations", "instances_train2014.json")
    n_ann = _coco_json(path, n)
    t0 = time.perf_counter()
    COCO(root, cache).labels(COCO(root, cache).ids("train_all"))  # second open: the cache
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = COCO(root, cache)
    ds.labels(ds.ids("train_all"))
    warm = time.perf_counter() - t0
    # the VOC reader's cache of as many images, written as its _save_cache writes it
    voc = os.path.join(tmp, "voc")
    for sub in ("JPEGImages", "Annotations", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(voc, sub))
    v = VOC(voc, cache)
    rng = np.random.default_rng(0)
    v._labels = {f"{k:06d}": np.flatnonzero(rng.random(20) < 0.08) for k in range(n)}
    v._save_cache()
    t0 = time.perf_counter()
    got = VOC(voc, cache).labels(list(v._labels))
    voc_s = time.perf_counter() - t0
    assert len(got) == n
    # how the cache used to be read: the whole label array read from the npz once per image
    k = 300
    with np.load(os.path.join(cache, "cls_labels.npz"), allow_pickle=False) as z:
        t0 = time.perf_counter()
        for m in range(k):
            z["labels"][m].nonzero()
        old_s = (time.perf_counter() - t0) / k * n
    return {"img_s": n / warm, "cold_s": cold, "warm_s": warm, "voc_cache_s": voc_s,
            "voc_cache_old_s": old_s,
            "json_mib": os.path.getsize(path) / 2**20, "n_ann": n_ann,
            "model": f"{n} images, {n_ann} instances, {os.path.getsize(path) / 2**20:.0f} MiB JSON"}


def c_coco_masks(size, dev, a):
    """Step coco_masks per image: the instance JSON converted by the rule (pycocotools
    decodes ~7 polygons of COCO size, painted largest first) and the PNG written, then the
    comparison with a provided mask (two PNGs read)."""
    from misc.imutils import read_label, save_label_png
    from voc12.coco import COCO, mask_difference
    tmp = tempfile.mkdtemp(prefix="bench_masks_")
    root = os.path.join(tmp, "coco")
    os.makedirs(os.path.join(root, "annotations"))
    rng = np.random.default_rng(0)
    images, anns = [], []
    for k in range(40):
        images.append({"id": k, "file_name": f"COCO_train2014_{k:012d}.jpg", "height": 480,
                       "width": 640})
        for _ in range(7):  # COCO: 7.3 instances per image, polygons of ~20 vertices
            cx, cy, r = rng.uniform(100, 540), rng.uniform(100, 380), rng.uniform(20, 120)
            ang = np.sort(rng.uniform(0, 2 * np.pi, 20))
            poly = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel().tolist()
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(rng.integers(1, 81)),
                         "iscrowd": 0, "segmentation": [poly]})
    with open(os.path.join(root, "annotations", "instances_train2014.json"), "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 81)]}, f)
    ds = COCO(root, os.path.join(tmp, "result"))
    ids = ds.ids("train")
    ds.load_api("train2014")
    it = iter(ids * 100)

    def convert():
        i = next(it)
        save_label_png(os.path.join(tmp, "out", f"{i}.png"), ds.convert_mask(i))
    conv = rate(convert, torch.device("cpu"), 10, 1)
    a_png, b_png = os.path.join(tmp, "out", f"{ids[0]}.png"), os.path.join(tmp, "out", f"{ids[1]}.png")
    cmp_ = rate(lambda: mask_difference(read_label(a_png), read_label(b_png)), torch.device("cpu"), 10, 1)
    return {"img_s": conv, "compare_img_s": cmp_,
            "model": f"640x480, 7 polygons per image; compared with a provided mask: {cmp_:.3g} img/s"}


def c_eval_classes(size, dev, a):
    """One image of a CAM evaluation as cam_record does it (read the CAM file and the mask,
    one confusion matrix and one set of contour counts per threshold of the sweep) at
    COCO size with COCO's 81 labels, against VOC's 21 on the same files; and the scores
    of 20 summed 81x81 matrices. The maps are noise: the contour counts' worst case
    (every pixel on some threshold's boundary)."""
    from misc.cam_io import load_cam, save_cam
    from misc.imutils import read_label, save_label_png
    from misc.metrics import SWEEP_THRESHOLDS, scores, sweep_counts
    h, w = SIZES[size]
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    maps = rng.random((len(KEYS), h, w), dtype=np.float32)
    save_cam(os.path.join(tmp, "c.npz"), KEYS, maps[:, ::4, ::4], maps)
    gt = np.zeros((h, w), np.uint8)
    for k, c in enumerate(KEYS):  # one blob per class, borders of 255
        gt[40 + 120 * k:140 + 120 * k, 60:400] = c + 1
    gt[38:40] = 255
    save_label_png(os.path.join(tmp, "m.png"), gt)
    thr = sorted(set(SWEEP_THRESHOLDS) | {0.25})
    out, conf = {}, {}
    for n in (N_CLASSES + 1, len(VOC_CLASSES) + 1) * 2:  # alternated, the best of two
        conf[n] = np.zeros((len(thr), n, n), np.int64)

        def one():  # noqa: B023
            c = load_cam(os.path.join(tmp, "c.npz"), KEYS, n - 1)
            conf[n] += sweep_counts(c["high_res"], c["keys"], read_label(
                os.path.join(tmp, "m.png")), thr, n)[0]
        out[n] = max(out.get(n, 0), rate(one, torch.device("cpu"), 5, 1))
    t0 = time.perf_counter()
    for m in conf[N_CLASSES + 1]:
        scores(m)
    return {"img_s": out[N_CLASSES + 1], "voc_labels_img_s": out[len(VOC_CLASSES) + 1],
            "scores_s": time.perf_counter() - t0, "thresholds": len(thr),
            "model": f"{h}x{w}, {len(KEYS)} classes present, {len(thr)} thresholds, "
                     f"{N_CLASSES + 1} labels ({len(VOC_CLASSES) + 1} labels: "
                     f"{out[len(VOC_CLASSES) + 1]:.3g} img/s)"}


CASES = {"matmul_peak": c_matmul_peak, "loader": c_loader, "train_cam": c_train_cam, "make_cam": c_make_cam, "train_vit": c_train_vit,
         "make_vit_cam": c_make_vit_cam, "train_orandnet": c_train_orandnet,
         "make_orandnet_cam": c_make_orandnet_cam, "cam_to_ir_label": c_cam_to_ir_label,
         "train_irn": c_train_irn, "make_sem_seg_labels": c_make_sem_seg_labels,
         "train_seg": c_train_seg, "make_seg": c_make_seg,
         "walk_sparse": c_walk("sparse"), "walk_dense": c_walk("dense"),
         "vit_cam_memory": c_vit_cam_memory, "labels": c_labels, "eval_classes": c_eval_classes,
         "coco_masks": c_coco_masks}
VOC_ONLY = ("loader", "matmul_peak", "vit_cam_memory")  # about VOC-size inputs or the card
# at COCO size only what differs from VOC: the full-image inference stages (more pixels,
# more classes per image), label loading and the 80-class evaluation; the trainers see
# fixed crops, as on VOC, so the COCO estimate takes their VOC-size rows
COCO_CASES = ("make_cam", "make_vit_cam", "make_orandnet_cam", "cam_to_ir_label",
              "make_sem_seg_labels", "make_seg", "labels", "eval_classes", "coco_masks")
COCO_ONLY = ("labels", "eval_classes", "coco_masks")
OWN_SECTION = ("walk_", "loader", "matmul_peak", "vit_cam_memory", "labels", "eval_classes")


def runs_at(name, size):
    """Whether case `name` runs at `size`."""
    if size == "coco":
        return name in COCO_CASES
    return name not in COCO_ONLY and not (size == "toy" and name in VOC_ONLY)


def run_case(name, size, a):
    """Run one case in this process; print its result as one JSON line."""
    global N_CLASSES, KEYS
    N_CLASSES, KEYS = CLASSES_OF[size]
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = CASES[name](size, dev, a)
    r["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    r["load"] = os.getloadavg()[0]  # other processes on the machine slow a case down
    r["torch"] = torch.__version__
    if dev.type == "cuda":
        r["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(r))


# ---------------------------------------------------------------- the report
def machine(dev):
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "none"
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), GPU {gpu}")


def peak_tflops(dev, flag, results):
    """The bf16 peak the trainers are compared with, and where it comes from: --peak_tflops,
    else the 8192^3 matmul measured in this run, else the card's datasheet figure."""
    if flag:
        return flag, "--peak_tflops"
    if dev.type != "cuda":
        return None, None
    measured = results.get(("matmul_peak", "voc"), {}).get("tflops")
    if measured:
        return measured, "an 8192^3 bf16 matmul measured in this run"
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None), "the datasheet"


def estimate(results, size="voc"):
    """Hours of each stage of the paper preset on VOC (size 'voc': train_aug) or of
    paper_coco on COCO (size 'coco': the 82,081 annotated train images, val predicted,
    plus the 7 CAM evaluations of the train images): images x epochs / measured img/s. At
    COCO size a stage measured only at VOC size (the trainers, on fixed crops) takes its
    VOC-size rate."""
    p = PRESET_OF[size]
    n = VOC_IMAGES["train_aug"] if size == "voc" else COCO_IMAGES["train"]
    work = {"train_cam": n * p["cam_epochs"], "make_cam": n,
            "train_vit": n * p["vit_epochs"], "make_vit_cam": n,
            "train_orandnet": p["orand_iters"], "make_orandnet_cam": n,
            "cam_to_ir_label": n, "train_irn": n * p["irn_epochs"],
            "make_sem_seg_labels": n, "train_seg": n * p["seg_epochs"],
            "make_seg": VOC_IMAGES["val"] + VOC_IMAGES["test"] if size == "voc" else
            COCO_IMAGES["val"]}
    if size == "coco":  # cam, vit_cam, naive, OR, AND, ORANDNet, ORANDNet again before IRN
        work["evaluations (eval_classes)"] = 7 * n
        work = {"coco_masks": n + COCO_IMAGES["val"], **work}  # step 0: both lists converted
    rows = []
    for stage, k in work.items():
        at = measured_at(results, stage, size)
        r = results.get((_case(stage), at))
        rows.append((stage, k, r["img_s"] if r else None, k / r["img_s"] / 3600 if r else None))
    return rows


def _case(stage):
    return "eval_classes" if stage.startswith("evaluations") else stage


def measured_at(results, stage, size="coco"):
    """The size whose row an estimate row takes: its own, else (COCO) the VOC one."""
    case = _case(stage)
    return size if (case, size) in results else "voc" if (case, "voc") in results else "—"


def coco_section(results):
    """The report's MS COCO 2014 part: label loading at 82k images, the 80-class
    evaluation, and the paper_coco estimate (empty without COCO-size results)."""
    if not any(size == "coco" for _, size in results):
        return []
    L = ["## MS COCO 2014 (paper_coco)", "",
         "Where COCO differs from VOC: 82,081 training images with labels and masks, 80 "
         "classes (2.9 per image on average, 1.5 on VOC), 640x480 images. The inference "
         "stages at COCO size are rows `coco` of the first table (3 classes per image; the "
         "CRF of make_seg over 81 labels)."]
    r = results.get(("labels", "coco"))
    if r:
        L += ["", "| image-level labels of 82,081 images | seconds |", "|---|---|",
              f"| COCO: instance JSON parsed into the index (first run; {r['json_mib']:.0f} MiB, "
              f"{r['n_ann']} instances) | {r['cold_s']:.1f} |",
              f"| COCO: cached index read, all labels handed out (every later run) | "
              f"{r['warm_s']:.2f} |",
              f"| VOC layout: label cache read, all labels handed out | {r['voc_cache_s']:.2f} |"]
        if "voc_cache_old_s" in r:
            L.append(f"| VOC layout, as the cache was read before (its label array read once "
                     f"per image; timed on 300, times 82,081) | {r['voc_cache_old_s']:.0f} |")
    r = results.get(("coco_masks", "coco"))
    if r:
        L += ["", f"Step 0, coco_masks ({r['model']}): {r['img_s']:.3g} img/s converted and "
              f"written in one process; it runs in --num_workers loader processes."]
    r = results.get(("eval_classes", "coco"))
    if r:
        L += ["", f"One image of a CAM evaluation ({r['model']}): {1 / r['img_s']:.3f} s at "
              f"81 labels, {1 / r['voc_labels_img_s']:.3f} s at 21 (one pass over the pixels "
              f"for all {r['thresholds']} thresholds; the matrices grow with the square of the "
              f"labels, the pixel work does not). Scores of the {r['thresholds']} summed "
              f"81x81 matrices: {r['scores_s'] * 1e3:.1f} ms."]
    loads = [r["load"] for (_, z), r in results.items() if z == "coco" and "load" in r]
    if loads:
        L += ["", f"The COCO-size cases ran with a 1-minute load average of {min(loads):.1f}-"
              f"{max(loads):.1f} on {os.cpu_count()} CPUs (other sessions sharing the machine: "
              "a load above the CPU count slows every case); rows without a recorded load "
              "(`load` in bench/results.json) come from earlier runs: compare speeds across "
              "runs with that in mind."]
    L += ["", "### Estimate of the full paper_coco run on this machine", "",
          f"{COCO_IMAGES['train']} train images x the preset's epochs (IRN and the segmenter "
          f"train on all of them), {COCO_IMAGES['val']} val images predicted; trainers at their "
          "VOC-size rate (same crops), inference at COCO size.", "",
          "| stage | images processed | img/s | measured at | hours |", "|---|---|---|---|---|"]
    total = 0.0
    for stage, n, ips, hours in estimate(results, "coco"):
        total += hours or 0
        L.append(f"| {stage} | {n} | {ips and f'{ips:.3g}' or 'not measured'} | "
                 f"{measured_at(results, stage)} | {hours and f'{hours:.1f}' or '—'} |")
    return L + [f"| **total** | | | | **{total:.1f}** |", ""]


def write_report(path, results, dev, a, seconds, ran=None):
    peak, peak_from = peak_tflops(dev, a.peak_tflops, results)
    mode = "bf16 autocast + channels_last" if dev.type == "cuda" else "fp32"
    ran = len(results) if ran is None else ran
    dates = sorted({r["date"] for r in results.values() if "date" in r})
    merged = "" if ran == len(results) else \
        (f" This run measured {ran} of the {len(results)} cases (`--only`); the others are the "
         f"last results stored in bench/results.json (measured {', '.join(dates)}; torch "
         f"{', '.join(sorted({r['torch'] for r in results.values() if 'torch' in r}))} where "
         f"recorded).")
    L = ["# Benchmarks", "", f"Written by `make bench` (`python bench/bench.py`) on "
         f"{time.strftime('%Y-%m-%d')}, in {seconds / 60:.1f} min.{merged}", "",
         f"Machine: {machine(dev)}. Device: {dev} ({mode}).", "",
         "Toy size: the toy preset's models on 160x120 images; VOC size: the paper preset's "
         "models on 500x375 images; COCO size: the paper_coco preset's on 640x480 images with "
         "80 classes, 3 per image (random weights and inputs: speed does not depend on them). "
         "On CPU the VOC-size trainers run smaller batches than the preset (marked in the "
         "model column). Every case runs in a fresh process: peak RSS is that case's alone.", "",
         f"The bf16 peak of the last column: {peak and f'{peak:.0f} TFLOP/s, from {peak_from}'}. "
         "fp32 img/s: the same training step without autocast (CUDA only).", "",
         "| stage | size | model | img/s | fp32 img/s | bf16 speed-up | peak RSS GiB | "
         "peak CUDA GiB | GFLOP/img | achieved TFLOP/s | of bf16 peak |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (stage, size), r in results.items():
        if stage.startswith(OWN_SECTION):
            continue  # in their own sections below
        g = r.get("gflop_per_img")
        tf = g * r["img_s"] / 1e3 if g else None
        cuda = f"{r['peak_cuda_gib']:.2f}" if "peak_cuda_gib" in r else "—"
        f32 = r.get("img_s_fp32")
        up = f"{r['img_s'] / f32:.2f}x" if f32 else "—"
        L.append(f"| {stage} | {size} | {r['model']} | {r['img_s']:.3g} | "
                 f"{f32 and f'{f32:.3g}' or '—'} | {up} | "
                 f"{r['peak_rss_gib']:.2f} | "
                 f"{cuda} | {g and f'{g:.1f}' or '—'} | "
                 f"{tf and f'{tf:.3f}' or '—'} | "
                 f"{f'{100 * tf / peak:.1f} %' if tf and peak else '—'} |")
    L += ["", "## Data loading", "",
          "The VOC-size classifier trainers fed by the real loader (JPEG decode, random resize, "
          f"flip, crop of 500x375 images, {a.workers} workers) against a fixed batch already on "
          "the device.", "", "| stage | img/s, loading excluded | img/s, loading included | "
          "included / excluded |", "|---|---|---|---|"]
    for stage in ("train_cam", "train_vit"):
        r = results.get((stage, "voc"))
        if r and "img_s_with_loading" in r:
            x, y = r["img_s"], r["img_s_with_loading"]
            L.append(f"| {stage} | {x:.3g} | {y:.3g} | {y / x:.2f} |")
    r = results.get(("loader", "voc"))
    if r:
        L += ["", f"The loader alone (VOC size, crop 512, batches of 8): {r['model']}. A trainer "
              "whose loading-excluded img/s is above this number is limited by data loading."]
    r = results.get(("vit_cam_memory", "voc"))
    if r:
        what = "peak CUDA memory allocated" if dev.type == "cuda" else \
            "the process's peak RSS so far (a high-water mark)"
        L += ["", "## ViT CAM memory", "", f"One image's CAMs, {r['model']}: one forward, then "
              f"one backward and one relevance pass per class; {what}.", "",
              "| classes in the image | peak GiB | seconds |", "|---|---|---|"]
        L += [f"| {k} | {v['gib']:.2f} | {v['s']:.3f} |" for k, v in r["by_classes"].items()]
    L += ["", "## Side by side", "", "| comparison | size | this project | the reference's way | ratio |",
          "|---|---|---|---|---|"]
    for size in SIZES:
        r = results.get(("make_orandnet_cam", size))
        if r:
            L.append(f"| ORANDNet inference, batched vs per map (img/s) | {size} | {r['img_s']:.3g} "
                     f"| {r['per_map_img_s']:.3g} | {r['ratio']:.2f}x |")
        s, d = results.get(("walk_sparse", size)), results.get(("walk_dense", size))
        if s and d:
            gs, gd = (max(x["rss_growth_gib"], 1e-4) for x in (s, d))
            L.append(f"| random walk, sparse vs dense (s/image; RSS growth GiB) | {size} | "
                     f"{1 / s['img_s']:.3g} s; {gs:.3f} | {1 / d['img_s']:.3g} s; {gd:.3f} | "
                     f"{s['img_s'] / d['img_s']:.0f}x faster, {gd / gs:.0f}x less memory |")
    L += ["", "## Estimate of the full paper-preset VOC run on this machine", "",
          f"Images x epochs (train_aug = {VOC_IMAGES['train_aug']}; the segmenter needs "
          "pseudo-masks for all of train_aug) / the VOC-size img/s above; one device, no "
          "overlap between stages.", "", "| stage | images processed | img/s | hours |",
          "|---|---|---|---|"]
    total = 0.0
    for stage, n, ips, hours in estimate(results):
        total += hours or 0
        L.append(f"| {stage} | {n} | {ips and f'{ips:.3g}' or 'not measured'} | "
                 f"{hours and f'{hours:.1f}' or '—'} |")
    L += [f"| **total** | | | **{total:.1f}** |", ""]
    L += coco_section(results)
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(L))
    os.replace(path + ".tmp", path)
    return "\n".join(L)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="", help="run the cases whose 'stage:size' contains this")
    p.add_argument("--sizes", default="toy,voc,coco")
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=None,
                   help="timed training steps per case (default: 10 on CUDA, 2 on CPU)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="loader processes of the data-loading rows")
    p.add_argument("--peak_tflops", type=float, default=None, help="the device's bf16 peak")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    p.add_argument("--fresh", action="store_true",
                   help="report this run's cases only (default: merged into the stored ones)")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case
    a = p.parse_args()
    if a.iters is None:
        a.iters = 10 if resolve_device(a.device).type == "cuda" else 2
    if a.case:
        return run_case(*a.case.split(":"), a)
    t0, results = time.time(), {}
    for size in a.sizes.split(","):
        for name in CASES:
            if a.only not in f"{name}:{size}" or not runs_at(name, size):
                continue
            cmd = [sys.executable, __file__, "--case", f"{name}:{size}", "--device", a.device,
                   "--iters", str(a.iters), "--workers", str(a.workers)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{name}:{size} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            results[(name, size)] = {**json.loads(line[7:]), "date": time.strftime("%Y-%m-%d")}
            print(f"{name}:{size} {results[(name, size)]['img_s']:.3g} img/s", flush=True)
    ran = len(results)
    # every case's last result is kept (bench/results.json): a run of some cases (--only)
    # updates their rows and leaves the others as measured before
    store = os.path.join(os.path.dirname(os.path.abspath(a.out)), "results.json")
    old = {} if a.fresh or not os.path.exists(store) else \
        {tuple(k.split(":")): v for k, v in json.load(open(store)).items()}
    results = {**old, **results}
    os.makedirs(os.path.dirname(store), exist_ok=True)
    with open(store + ".tmp", "w") as f:
        json.dump({f"{n}:{z}": v for (n, z), v in results.items()}, f, indent=1)
    os.replace(store + ".tmp", store)
    print(write_report(a.out, results, resolve_device(a.device), a, time.time() - t0, ran))


if __name__ == "__main__":
    main()
