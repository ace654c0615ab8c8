"""Tests of the toy-VOC generator: layout, label PNGs, XML/mask agreement, determinism, context."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from misc.imutils import read_image, read_label, voc_palette
from voc12 import toy
from misc.metrics import IGNORE
from voc12.classes import VOC_CLASSES as CAT_LIST

SMALL = dict(n_train=8, n_aug=8, n_val=4, n_test=4, size=80)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return toy.generate(str(tmp_path_factory.mktemp("toy")), seed=3, quiet=True, **SMALL)


def _list(root, name):
    with open(os.path.join(root, "ImageSets", "Segmentation", name + ".txt")) as f:
        return f.read().split()


def _stems(root, folder):
    return {os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, folder))}


def _xml_objects(root, img_id):
    ann = ET.parse(os.path.join(root, "Annotations", img_id + ".xml")).getroot()
    size = ann.find("size")
    wh = int(size.find("width").text), int(size.find("height").text)
    boxes = [(o.find("name").text, [int(o.find("bndbox").find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")])
             for o in ann.iter("object")]
    return wh, boxes


def test_tables():
    looks = [toy.class_look(i) for i in range(len(CAT_LIST))]
    assert len({lk[1:3] for lk in looks}) == 20  # the part alone names a VOC class
    for g in range(4):
        members = [lk for lk in looks if lk[0] == g]
        assert len(members) == 5 and len({lk[1] for lk in members}) == 5
    assert set(toy.CONTEXT) <= set(CAT_LIST) and set(toy.CONTEXT.values()) == set(toy.CONTEXTS)
    # the toy COCO's 80 classes: body, part colour and pattern together name each one
    assert toy.N_LOOKS == 80 and len({toy.class_look(i)[:3] for i in range(80)}) == 80


def test_layout(root):
    train, val, test, trainval = (_list(root, n) for n in ("train", "val", "test", "trainval"))
    assert (len(train), len(val), len(test)) == (8, 4, 4) and trainval == train + val
    every = {f"toy_{i:06d}" for i in range(1, 25)}
    assert _stems(root, "JPEGImages") == every and _stems(root, "Annotations") == every
    aug = every - set(train) - set(val) - set(test)
    assert len(aug) == 8 and len(set(train) | set(val) | set(test)) == 16
    assert _stems(root, "SegmentationClass") == set(train) | set(val)
    assert _stems(root, "SegmentationClassAug") == set(train) | aug | set(val)
    assert not any(f.endswith(".tmp") or ".tmp." in f for _, _, fs in os.walk(root) for f in fs)


def test_label_pngs(root):
    for img_id in _list(root, "trainval"):
        im = Image.open(os.path.join(root, "SegmentationClass", img_id + ".png"))
        assert im.mode == "P"
        pal = np.array(im.getpalette(), np.uint8).reshape(-1, 3)
        assert np.array_equal(pal[:256], voc_palette())
        aug = Image.open(os.path.join(root, "SegmentationClassAug", img_id + ".png"))
        assert aug.mode == "L" and np.array_equal(np.asarray(aug), np.asarray(im))
    # the written files are exactly what the renderer draws (index = id number - 1)
    r = toy.render_image(3, 4, SMALL["size"])
    assert np.array_equal(read_label(os.path.join(root, "SegmentationClassAug", "toy_000005.png")), r["label"])
    jpg = read_image(os.path.join(root, "JPEGImages", "toy_000005.jpg")).astype(int)
    assert np.abs(jpg - r["img"]).mean() < 8


def test_masks_agree_with_xml(root):
    n_multi = 0
    for img_id in sorted(_stems(root, "SegmentationClassAug")):
        lab = read_label(os.path.join(root, "SegmentationClassAug", img_id + ".png"))
        (w, h), boxes = _xml_objects(root, img_id)
        assert lab.shape == (h, w) == read_image(os.path.join(root, "JPEGImages", img_id + ".jpg")).shape[:2]
        assert max(lab.shape) == SMALL["size"]
        assert set(np.unique(lab)) <= set(range(21)) | {IGNORE} and (lab == IGNORE).any()
        classes = set(np.unique(lab)) - {0, IGNORE}
        assert {CAT_LIST.index(n) + 1 for n, _ in boxes} == classes and classes
        n_multi += len(classes) >= 2
        for name, (x0, y0, x1, y1) in boxes:
            assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h
        # the 255 band separates every object from the background and from other objects
        for a, b in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1])):
            touch = (a != b) & (a != IGNORE) & (b != IGNORE)
            assert not touch.any(), img_id
    assert n_multi >= 3


def test_deterministic(tmp_path):
    flags = ["--n_train", "3", "--n_aug", "2", "--n_val", "2", "--n_test", "2", "--size", "64"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        toy.main(["--out", str(tmp_path / name), "--seed", seed] + flags)

    def files(d):
        out = {}
        for dirpath, _, fs in os.walk(d):
            for f in fs:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out[os.path.relpath(os.path.join(dirpath, f), d)] = fh.read()
        return out

    a, b, c = (files(tmp_path / n) for n in "abc")
    assert len(a) == 9 * 2 + 7 * 1 + 5 + 4 and a == b  # jpg+xml, Aug masks, VOC masks, lists
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


def test_context_cooccurs():
    shown, n_ctx, stray, n_rgb = 0, 0, 0, {}
    means = {}
    for i in range(60):
        r = toy.render_image(11, i, 64)
        present = {toy.CONTEXTS[k - 1] for k in np.unique(r["context"]) if k}
        own = {toy.CONTEXT[CAT_LIST[c]] for c, _ in r["objects"] if CAT_LIST[c] in toy.CONTEXT}
        shown += len(own & present)
        n_ctx += len(own)
        stray += bool(present - own)
        # context is background in the label
        assert set(np.unique(r["label"][r["context"] > 0])) <= {0, IGNORE}
        for k, name in enumerate(toy.CONTEXTS, 1):
            px = r["img"][r["context"] == k].astype(float)
            if len(px):
                means[name] = means.get(name, 0) + px.sum(0)
                n_rgb[name] = n_rgb.get(name, 0) + len(px)
    assert n_ctx >= 15 and shown / n_ctx >= 0.75
    assert stray / 60 <= 0.2
    rgb = {k: means[k] / n_rgb[k] for k in means}
    assert len(rgb) >= 3
    if "water" in rgb:
        assert rgb["water"][2] > rgb["water"][0] + 60
    if "sky" in rgb:
        assert rgb["sky"][2] > rgb["sky"][0] + 30
    if "grass" in rgb:
        assert rgb["grass"][1] > max(rgb["grass"][0], rgb["grass"][2]) + 40
    if "rails" in rgb:
        assert np.ptp(rgb["rails"]) < 40
