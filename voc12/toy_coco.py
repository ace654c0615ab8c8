"""Toy MS COCO 2014 generator: the toy VOC's drawing (voc12.toy) in the COCO 2014 layout.

    python -m voc12.toy_coco --out toy_coco --seed 0    # writes toy_coco/COCO2014

COCO's 80 categories (their real ids 1-90 with gaps, listed out of order in the JSON:
the reader must sort them); class k (k-th smallest id) is drawn with the toy look k
(the first 20 are the toy VOC's classes, their context included). Per image 0-6
instances, classes repeating, so there are images without any annotation, images of many
classes and several instances of one class. Each instance is written as a polygon
(cv2 contour), a compressed RLE or, for crowd regions (iscrowd 1, one instance in 10),
an uncompressed RLE, and is drawn from its own decoded segmentation, so the JSON
describes the pixels exactly. Instances overlap: they are painted crowd first, then from
the largest to the smallest (the conversion rule of voc12.coco.semantic_mask), so
SegmentationClass/{train2014,val2014}/<id>.png (the pre-converted route, written for the
annotated images only, no 255 borders) equals the rule's conversion of the JSON.
"""
import argparse
import json
import os
import time
import warnings

import cv2
import numpy as np
from tqdm import tqdm

from misc.fileio import atomic_path
from misc.imutils import save_jpeg, save_label_png
from voc12.coco import PROVIDED_MASKS, json_path
from voc12.toy import N_LOOKS, render_image

CATEGORIES = (  # (id, name, supercategory) of COCO 2014, in id order
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"), (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"),
    (49, "knife", "kitchen"), (50, "spoon", "kitchen"), (51, "bowl", "kitchen"),
    (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"))
assert len(CATEGORIES) == N_LOOKS == 80
# instances per image (0: an image without annotation) and their probabilities
COUNTS = ((0, 1, 2, 3, 4, 5, 6), (.1, .2, .2, .2, .15, .1, .05))
P_CROWD, P_RLE = 0.1, 0.25  # an instance is a crowd region; a non-crowd one is an RLE


def rle_counts(mask):
    """Uncompressed COCO RLE counts of a bool mask: run lengths in column-major order,
    starting with a run of zeros (possibly empty)."""
    flat = mask.ravel(order="F").astype(np.int8)
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    return [0] + runs if flat.size and flat[0] else runs


def _polygons(mask):
    """Outer contours of a mask as COCO polygons (through pixel centres)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]


def encode_instance(mask, rng):
    """(iscrowd, segmentation, decoded bool mask) of one instance: crowd regions as
    uncompressed RLE, others as a compressed RLE or polygons."""
    import pycocotools.mask as cm
    h, w = mask.shape
    crowd = bool(rng.random() < P_CROWD)
    polys = [] if crowd or rng.random() < P_RLE else _polygons(mask)
    if crowd:
        seg = {"size": [h, w], "counts": rle_counts(mask)}
        rle = cm.frPyObjects(seg, h, w)
    elif polys:
        seg, rle = polys, cm.merge(cm.frPyObjects(polys, h, w))
    else:
        rle = cm.encode(np.asfortranarray(mask.astype(np.uint8)))
        seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    with warnings.catch_warnings():  # pycocotools + numpy 2: a warning per mask
        warnings.simplefilter("ignore", DeprecationWarning)
        return crowd, seg, cm.decode(rle).astype(bool)


def render_coco_image(seed, index, size, n_classes):
    """One toy COCO image: render_image's dict whose instances carry iscrowd and their
    JSON segmentation, painted crowd first, then largest to smallest."""
    rng = np.random.default_rng([seed, index, 2014])  # apart from the drawing's stream

    def encode(o):
        o["iscrowd"], o["segmentation"], o["mask"] = encode_instance(o["mask"], rng)
        o["part"] &= o["mask"]
        return o
    return render_image(seed, index, size, n_classes, COUNTS,
                        order=lambda o: (not o["iscrowd"], -int(o["mask"].sum())), encode=encode)


def generate(out, seed=0, n_train=100, n_val=50, size=160, n_classes=80, quiet=False):
    """Write a toy COCO 2014 root under `out` and return its path (`out/COCO2014`): JPEGs in
    train2014/ and val2014/, annotations/instances_{train,val}2014.json and the
    pre-converted masks of the annotated images in SegmentationClass/. With n_classes < 80
    only the first n_classes categories exist."""
    t0 = time.time()
    root = os.path.join(out, "COCO2014")
    cats = CATEGORIES[:n_classes]
    order = np.random.default_rng([seed, 80]).permutation(len(cats))  # JSON order: shuffled
    n_ann, n_empty, k = 0, 0, 0
    for folder, n in (("train2014", n_train), ("val2014", n_val)):
        images, anns = [], []
        for _ in tqdm(range(n), desc=f"toy COCO {folder}", disable=quiet):
            image_id = 9 + 7 * k  # sparse ids, as COCO's
            stem = f"COCO_{folder}_{image_id:012d}"
            r = render_coco_image(seed, k, size, n_classes)
            k += 1
            h, w = r["img"].shape[:2]
            images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w})
            save_jpeg(os.path.join(root, folder, f"{stem}.jpg"), r["img"])
            for o in r["instances"]:
                n_ann += 1
                ys, xs = np.nonzero(o["mask"])
                anns.append({"id": n_ann, "image_id": image_id, "category_id": cats[o["cls"]][0],
                             "segmentation": o["segmentation"], "area": float(o["mask"].sum()),
                             "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1),
                                      float(np.ptp(ys) + 1)], "iscrowd": int(o["iscrowd"])})
            if not r["instances"]:
                n_empty += 1
                continue
            label = np.array([0] + [o["cls"] + 1 for o in r["instances"]], np.uint8)[r["inst"]]
            save_label_png(os.path.join(root, PROVIDED_MASKS, folder, f"{stem}.png"), label,
                           palette=False)
        shuffle = np.random.default_rng([seed, len(anns)]).permutation(len(anns))
        shuffled = [anns[i] for i in shuffle]
        data = {"info": {"description": "toy COCO 2014"}, "images": images,
                "annotations": shuffled,
                "categories": [{"id": cats[i][0], "name": cats[i][1], "supercategory": cats[i][2]}
                               for i in order]}
        with atomic_path(json_path(root, folder)) as tmp, open(tmp, "w") as f:
            json.dump(data, f)
    if not quiet:
        print(f"toy COCO: {n_train} train + {n_val} val images at {size}px, {n_ann} instances, "
              f"{n_empty} images without annotation, {len(cats)} categories, in {root} "
              f"({time.time() - t0:.1f}s)")
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder; the COCO2014 root goes inside")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_train", type=int, default=100)
    p.add_argument("--n_val", type=int, default=50)
    p.add_argument("--size", type=int, default=160, help="long side of every image")
    p.add_argument("--n_classes", type=int, default=80, help="use the first N COCO categories")
    a = p.parse_args(argv)
    if not 1 <= a.n_classes <= len(CATEGORIES):
        p.error(f"--n_classes must be 1..{len(CATEGORIES)}")
    generate(a.out, a.seed, a.n_train, a.n_val, a.size, a.n_classes)


if __name__ == "__main__":
    main()
