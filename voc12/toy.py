"""Toy PASCAL VOC 2012 generator: small synthetic images in the real VOC layout.

The images reproduce the two difficulties of weakly supervised segmentation while
staying learnable from scratch in minutes:
  * discriminative parts: the 20 classes form 4 groups that share a body (shape and
    colour); only a smaller part (colour x pattern) tells the class inside a group,
    so class activation maps cover the part rather than the whole object;
  * co-occurring context: some classes are usually drawn on their own background
    texture (boat on water, ...), labelled background, so activation maps spill onto it.

    python -m voc12.toy --out toy_voc --seed 0      # writes toy_voc/VOC2012
"""
import argparse
import os
import time
import xml.etree.ElementTree as ET

import numpy as np
from tqdm import tqdm

from misc.fileio import atomic_path
from misc.imutils import save_jpeg, save_label_png
from misc.metrics import IGNORE
from voc12.classes import VOC_CLASSES
from voc12.dataloader import CLASSES_FILE

GROUP_SHAPES = ("ellipse", "rectangle", "triangle", "blob")
GROUP_COLOURS = ((150, 80, 30), (105, 45, 170), (245, 155, 185), (0, 120, 120))
PART_COLOURS = ((235, 20, 20), (255, 225, 0), (240, 0, 240), (0, 235, 235), (255, 130, 0))
PART_PATTERNS = ("solid", "stripes", "dots", "bullseye")
PART_POSITIONS = ("head", "tail", "centre")
N_LOOKS = len(GROUP_SHAPES) * len(PART_COLOURS) * len(PART_PATTERNS)  # 80 distinct classes
CONTEXTS = ("sky", "water", "grass", "rails")
CONTEXT = {"aeroplane": "sky", "bird": "sky", "boat": "water", "cow": "grass",
           "horse": "grass", "sheep": "grass", "train": "rails"}
# by class index: the first 20 classes are VOC's, drawn on their context
CONTEXT_OF = {VOC_CLASSES.index(c): name for c, name in CONTEXT.items()}


def class_look(i):
    """(group, part colour, pattern, position) of class index i < N_LOOKS. Body of group
    i % 4, part colour (i // 4) % 5; the pattern (and position) shift with the group and
    with k = i // 20, so neither the part colour nor the pattern alone names the class, but
    the (group, colour, pattern) triple is unique over all 80 classes (the toy VOC uses
    the first 20, the toy COCO all of them)."""
    g, c, k = i % 4, (i // 4) % 5, i // 20
    return g, c, PART_PATTERNS[(c + g + k) % 4], PART_POSITIONS[(c + g + k) % 3]
P_CONTEXT, P_STRAY_CONTEXT = 0.9, 0.05  # class drawn on its context; context patch without its class
# per body shape: part centre along the body's long axis u for each position, part radius
_PART_GEOM = {"ellipse": ({"head": .45, "tail": -.45, "centre": 0.}, .45),
              "rectangle": ({"head": .5, "tail": -.5, "centre": 0.}, .5),
              "triangle": ({"head": .2, "tail": -.5, "centre": -.15}, .36),
              "blob": ({"head": .4, "tail": -.4, "centre": 0.}, .42)}
_BLACK = np.array([20, 20, 20], np.float32)


def _grey_colour(rng, lo=60, hi=200, tint=12):
    """A low-saturation colour: background and clutter must not look like an object."""
    return rng.uniform(lo, hi) + rng.normal(0, tint, 3)


def _band(inst):
    """Pixels whose 3x3 neighbourhood holds two instance ids = dilate(m) - erode(m) over all m."""
    p = np.pad(inst, 1, mode="edge")  # edge padding: no band along the image edge, as in VOC
    h, w = inst.shape
    win = [p[i:i + h, j:j + w] for i in range(3) for j in range(3)]
    return np.max(win, axis=0) != np.min(win, axis=0)


def _sample_object(rng, cls, h, w, size):
    """One object: body and part masks (HxW bool) plus its colours and pattern."""
    g, colour, pattern, position = class_look(cls)
    long_side = rng.uniform(.25, .6) * size
    ar = np.exp(rng.uniform(np.log(.5), np.log(2)))
    bw, bh = (long_side, long_side / ar) if ar >= 1 else (long_side * ar, long_side)
    # the centre stays inside so at most ~30% of the box is clipped by the image border
    cx, cy = rng.uniform(.2 * bw, w - .2 * bw), rng.uniform(.2 * bh, h - .2 * bh)
    x = ((np.arange(w) + .5 - cx) / (bw / 2))[None, :]
    y = ((np.arange(h) + .5 - cy) / (bh / 2))[:, None]
    u, v = [(x, y), (-x, y), (y, x), (-y, x)][rng.integers(4)]  # where the "head" points
    shape = GROUP_SHAPES[g]
    if shape == "ellipse":
        body = u ** 2 + v ** 2 <= 1
    elif shape == "rectangle":
        body = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    elif shape == "triangle":
        body = (u >= -1) & (np.abs(v) <= (1 - u) / 2)
    else:
        body = np.hypot(u, v) <= .85 + .15 * np.sin(3 * np.arctan2(v, u) + rng.uniform(0, 2 * np.pi))
    offsets, radius = _PART_GEOM[shape]
    part = body & (np.hypot(u - offsets[position], v) <= radius)
    return dict(cls=cls, mask=body, part=part, pattern=pattern, centre=(cx, cy), box=(bw, bh),
                body_rgb=np.array(GROUP_COLOURS[g]) + rng.integers(-15, 16, 3),
                part_rgb=np.array(PART_COLOURS[colour]))


OBJECT_COUNTS = ((1, 2, 3), (.45, .35, .2))  # objects per image and their probabilities


def paint_instances(objs, h, w):
    """HxW map of 1 + the index of the object on top (0: none), objects painted in order."""
    inst = np.zeros((h, w), np.uint8)
    for k, o in enumerate(objs, 1):
        inst[o["mask"]] = k
    return inst


def _place_objects(rng, h, w, size, min_area, n_classes, counts=OBJECT_COUNTS, order=None,
                   encode=None):
    """Objects of the first n_classes classes (how many: drawn from `counts`) in paint
    order, each keeping >= min_area labelled pixels after occlusion. order: a sort key of
    the paint order (default: placement order); encode(o) -> o may replace an object's
    mask (the toy COCO passes it through its JSON encoding)."""
    objs, inst = [], np.zeros((h, w), np.uint8)
    for _ in range(rng.choice(counts[0], p=counts[1])):
        used = sorted({o["cls"] for o in objs})
        pool = [c for c in range(n_classes) if c not in used] or list(range(n_classes))
        cls = int(rng.choice(pool if rng.random() < .8 else n_classes))
        for _ in range(8 if objs else 1000):  # the first object always fits in a few tries
            o = _sample_object(rng, cls, h, w, size)
            if encode is not None:
                o = encode(o)
            trial_objs = sorted(objs + [o], key=order) if order else objs + [o]
            trial = paint_instances(trial_objs, h, w)
            visible = np.bincount(trial[~_band(trial)], minlength=len(trial_objs) + 1)[1:]
            if visible.min() >= min_area:
                objs, inst = trial_objs, trial
                break
    return objs, inst


def _context_texture(rng, name, h, w, size):
    y, x = np.mgrid[:h, :w].astype(np.float32)
    period = max(4., size / 20)
    if name == "sky":
        t = (y / h)[..., None]
        img = (1 - t) * np.array([110, 170, 240]) + t * np.array([185, 220, 250]) + np.zeros((1, w, 1))
        for _ in range(rng.integers(3, 7)):  # white clouds
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(.05, .12) * size
            img[((x - cx) / 1.8) ** 2 + (y - cy) ** 2 <= r ** 2] = (245, 245, 250)
    elif name == "water":
        s = np.sin(2 * np.pi * y / period + 1.5 * np.sin(2 * np.pi * x / (3 * period) + rng.uniform(0, 6)))
        img = np.where((s > .5)[..., None], np.array([90, 150, 230]), np.array([25, 75, 175]))
    elif name == "grass":
        img = np.array([55, 145, 40]) + rng.normal(0, 28, (h, w, 1)) * np.array([.5, 1, .3])
    else:  # rails: grey ballast, dark parallel rails, lighter sleepers across them
        img = np.full((h, w, 3), 125.) + rng.normal(0, 8, (h, w, 1))
        img[((x + rng.integers(int(period))) % (1.5 * period)) < 2] = (165, 150, 130)
        img[((y + rng.integers(int(period))) % period) < 2] = (55, 45, 40)
    return img


def _context_regions(rng, objs, h, w, size):
    """(name, HxW bool) context regions: around context-class objects, rarely a stray patch."""
    regions = []
    for o in objs:
        name = CONTEXT_OF.get(o["cls"])
        if name is not None and rng.random() < P_CONTEXT:
            f = rng.uniform(1.5, 2.5)
            (cx, cy), (bw, bh) = o["centre"], o["box"]
            hw, hh = (w if name in ("water", "rails") else f * bw / 2), f * bh / 2
            regions.append((name, cx - hw, cy - hh, cx + hw, cy + hh))
    present = {CONTEXT_OF.get(o["cls"]) for o in objs}
    if rng.random() < P_STRAY_CONTEXT:
        name = str(rng.choice([c for c in CONTEXTS if c not in present]))
        rw, rh = rng.uniform(.3, .7) * w, rng.uniform(.3, .7) * h
        x0, y0 = rng.uniform(0, w - rw), rng.uniform(0, h - rh)
        regions.append((name, x0, y0, x0 + rw, y0 + rh))
    y, x = np.mgrid[:h, :w] + .5
    return [(n, (x >= x0) & (x < x1) & (y >= y0) & (y < y1)) for n, x0, y0, x1, y1 in regions]


def _paint_part(img, o, size):
    """Part colour with the class pattern, in black, aligned on the part's own pixels."""
    ys, xs = np.nonzero(o["part"])
    if not len(ys):
        return
    per = max(4, round(size / 22))
    dy, dx = ys - ys.mean(), xs - xs.mean()
    if o["pattern"] == "stripes":
        dark = ((dx + dy) // (per / 2)) % 2 == 0
    elif o["pattern"] == "dots":
        dark = (dx % per - per / 2) ** 2 + (dy % per - per / 2) ** 2 < (per / 3.2) ** 2
    elif o["pattern"] == "bullseye":
        d = np.hypot(dx, dy) / max(np.hypot(dx, dy).max(), 1)
        dark = (d > .35) & (d < .65)
    else:
        dark = np.zeros(len(ys), bool)
    img[ys, xs] = np.where(dark[:, None], _BLACK, o["part_rgb"])


def render_image(seed, index, size=160, n_classes=len(VOC_CLASSES), counts=OBJECT_COUNTS,
                 order=None, encode=None):
    """Draw image `index` of the set for `seed`, with objects of the first n_classes
    classes (VOC's 20 by default; up to N_LOOKS): a dict with img (HxWx3 uint8), label (HxW
    uint8 class ids, 255 on object borders), objects [(class index, (xmin, ymin, xmax, ymax)
    1-based)], context (HxW uint8: 1 + CONTEXTS index where context shows, else 0),
    instances (the objects in paint order: cls, mask, ...) and inst (HxW: 1 + the index
    of the instance on top, 0 for background). counts, order and encode: see
    _place_objects."""
    rng = np.random.default_rng([seed, index])
    short = int(round(rng.uniform(.65, 1.) * size))
    h, w = (size, short) if rng.random() < .5 else (short, size)
    objs, inst = _place_objects(rng, h, w, size, max(10, round(60 * (size / 160) ** 2)), n_classes,
                                counts, order, encode)
    # background: smooth gradient between two greyish colours + noise + grey clutter shapes
    y, x = np.mgrid[:h, :w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(a) + y * np.sin(a)
    t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    img = (1 - t) * _grey_colour(rng) + t * _grey_colour(rng)
    for _ in range(rng.integers(2, 5)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(.05, .15, 2) * size
        box = (np.abs(x - cx) <= rx) & (np.abs(y - cy) <= ry)
        img[box if rng.random() < .5 else ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1] = _grey_colour(rng)
    context = np.zeros((h, w), np.uint8)
    for name, region in _context_regions(rng, objs, h, w, size):  # all contexts before any object
        img[region] = _context_texture(rng, name, h, w, size)[region]
        context[region] = CONTEXTS.index(name) + 1
    img += rng.normal(0, 6, (h, w, 1))
    for o in objs:
        img[o["mask"]] = (o["body_rgb"] + rng.normal(0, 10, (h, w, 3)))[o["mask"]]
        _paint_part(img, o, size)
    context[inst > 0] = 0
    label = np.array([0] + [o["cls"] + 1 for o in objs], np.uint8)[inst]
    label[_band(inst)] = IGNORE
    objects = []
    for k, o in enumerate(objs, 1):
        ys, xs = np.nonzero(inst == k)
        objects.append((o["cls"], (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)))
    return dict(img=np.clip(img, 0, 255).astype(np.uint8), label=label, objects=objects,
                context=context, instances=objs, inst=inst)


def _write_xml(path, img_id, h, w, objects):
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2012"
    ET.SubElement(ann, "filename").text = f"{img_id}.jpg"
    sz = ET.SubElement(ann, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(val)
    ET.SubElement(ann, "segmented").text = "1"
    for cls, box in objects:
        obj = ET.SubElement(ann, "object")
        for tag, val in (("name", VOC_CLASSES[cls]), ("pose", "Unspecified"), ("truncated", "0"),
                         ("difficult", "0")):
            ET.SubElement(obj, tag).text = val
        bb = ET.SubElement(obj, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(int(val))
    ET.indent(ann)
    with atomic_path(path) as tmp:
        ET.ElementTree(ann).write(tmp, encoding="utf-8")


def _write_list(path, ids):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("".join(i + "\n" for i in ids))


def generate(out, seed=0, n_train=100, n_aug=300, n_val=100, n_test=100, size=160, quiet=False,
             n_classes=len(VOC_CLASSES)):
    """Write a toy VOC2012 root under `out` and return its path (`out/VOC2012`).
    With n_classes < 20, only the first n_classes VOC classes appear and the root gets a
    classes.txt naming them: a dataset with its own class list.

    Ids are toy_000001... in the order train, aug, val, test. Train and val get palette
    masks in SegmentationClass; train, aug and val get single-channel masks in
    SegmentationClassAug; test gets none. The aug ids are in no list file.
    """
    t0 = time.time()
    root = os.path.join(out, "VOC2012")
    splits = ["train"] * n_train + ["aug"] * n_aug + ["val"] * n_val + ["test"] * n_test
    ids = {s: [] for s in ("train", "aug", "val", "test")}
    for i, split in enumerate(tqdm(splits, desc="toy VOC", disable=quiet)):
        img_id = f"toy_{i + 1:06d}"
        ids[split].append(img_id)
        r = render_image(seed, i, size, n_classes)
        save_jpeg(os.path.join(root, "JPEGImages", img_id + ".jpg"), r["img"])
        _write_xml(os.path.join(root, "Annotations", img_id + ".xml"), img_id, *r["label"].shape,
                   r["objects"])
        if split in ("train", "val"):
            save_label_png(os.path.join(root, "SegmentationClass", img_id + ".png"), r["label"])
        if split != "test":
            save_label_png(os.path.join(root, "SegmentationClassAug", img_id + ".png"), r["label"],
                           palette=False)
    if n_classes != len(VOC_CLASSES):
        _write_list(os.path.join(root, CLASSES_FILE), VOC_CLASSES[:n_classes])
    lists = dict(train=ids["train"], val=ids["val"], test=ids["test"], trainval=ids["train"] + ids["val"])
    for name, lst in lists.items():
        _write_list(os.path.join(root, "ImageSets", "Segmentation", name + ".txt"), lst)
    if not quiet:
        print(f"toy VOC: {len(splits)} images ({n_train} train, {n_aug} aug, {n_val} val, "
              f"{n_test} test) at {size}px in {root} ({time.time() - t0:.1f}s)")
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder; the VOC2012 root goes inside")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_train", type=int, default=100)
    p.add_argument("--n_aug", type=int, default=300, help="extra images with Aug masks only")
    p.add_argument("--n_val", type=int, default=100)
    p.add_argument("--n_test", type=int, default=100)
    p.add_argument("--size", type=int, default=160, help="long side of every image")
    p.add_argument("--n_classes", type=int, default=len(VOC_CLASSES),
                   help="use the first N VOC classes (N < 20 writes classes.txt)")
    a = p.parse_args(argv)
    if not 1 <= a.n_classes <= len(VOC_CLASSES):
        p.error(f"--n_classes must be 1..{len(VOC_CLASSES)}")
    generate(a.out, a.seed, a.n_train, a.n_aug, a.n_val, a.n_test, a.size,
             n_classes=a.n_classes)


if __name__ == "__main__":
    main()
