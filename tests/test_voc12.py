"""Tests of voc12.dataloader.VOC: split lists, XML labels and their cache, images, masks,
and the PipelineError raised (naming the file) for every kind of bad input."""
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from misc.errors import PipelineError
from misc.imutils import read_image, read_label, save_label_png
from misc.metrics import IGNORE
from voc12.classes import VOC_CLASSES as CAT_LIST

N_CLASSES = len(CAT_LIST)
from voc12.dataloader import VOC


def _list(root, name):
    with open(os.path.join(root, "ImageSets", "Segmentation", name + ".txt")) as f:
        return f.read().split()


def _stems(root, folder):
    return {f[:-4] for f in os.listdir(os.path.join(root, folder))}


def _raises_naming(path):
    """pytest.raises for a PipelineError whose message contains `path` literally."""
    return pytest.raises(PipelineError, match=re.escape(str(path)))


# ---- lists

def test_named_splits_match_list_files(toy_root):
    voc = VOC(toy_root)
    for split in ("train", "val", "test", "trainval"):
        assert voc.ids(split) == _list(toy_root, split)
    assert len(voc.ids("train")) == 8 and len(voc.ids("val")) == 4 and len(voc.ids("test")) == 4
    assert voc.ids("trainval") == voc.ids("train") + voc.ids("val")


def test_train_aug(toy_root):
    voc = VOC(toy_root)
    train, val = set(voc.ids("train")), set(voc.ids("val"))
    aug_only = _stems(toy_root, "SegmentationClassAug") - train - val
    assert len(aug_only) == 8  # toy ids in no list file
    expected = sorted((_stems(toy_root, "SegmentationClassAug") | train) - val)
    got = voc.ids("train_aug")
    assert got == expected and got == sorted(got)
    assert not set(got) & val
    assert aug_only <= set(got) and train <= set(got)
    assert not set(got) & set(voc.ids("test"))  # test ids have no Aug mask
    assert len(got) == 16


def test_train_aug_needs_aug_folder(toy_copy):
    shutil.rmtree(os.path.join(toy_copy, "SegmentationClassAug"))
    with _raises_naming(os.path.join(toy_copy, "SegmentationClassAug")):
        VOC(toy_copy).ids("train_aug")


def test_list_file_path_as_split(toy_root, tmp_path):
    lst = tmp_path / "mine.txt"
    # extra columns and blank lines are tolerated: the first token of each line is the id
    lst.write_text("toy_000003 extra\n\ntoy_000001\n  \ntoy_000010\n")
    assert VOC(toy_root).ids(str(lst)) == ["toy_000003", "toy_000001", "toy_000010"]


# ---- labels

def test_xml_labels_equal_mask_classes(toy_root, tmp_path):
    voc = VOC(toy_root, cache_dir=str(tmp_path))
    ids = sorted(_stems(toy_root, "SegmentationClassAug"))
    labels = voc.labels(ids)
    assert list(labels) == ids
    for i in ids:
        m = read_label(os.path.join(toy_root, "SegmentationClassAug", i + ".png"))
        classes = sorted(set(np.unique(m).tolist()) - {0, IGNORE})
        assert labels[i].tolist() == [c - 1 for c in classes], i
        assert labels[i].dtype.kind == "i"


def test_label_cache_written_and_reused(toy_copy, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    ids = _list(toy_copy, "train")
    first = VOC(toy_copy, cache_dir=str(cache)).labels(ids)
    path = cache / "cls_labels.npz"
    assert path.is_file()
    assert os.listdir(cache) == ["cls_labels.npz"]  # no temporary file left
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z["ids"].tolist()) == sorted(ids)
        assert str(z["root"]) == os.path.abspath(toy_copy)
        hot = z["labels"]
        assert hot.shape == (len(ids), N_CLASSES)
        for n, i in enumerate(z["ids"].tolist()):
            assert np.flatnonzero(hot[n]).tolist() == first[i].tolist()
    # without the XML files a fresh reader still knows the cached ids...
    ann = os.path.join(toy_copy, "Annotations")
    for f in os.listdir(ann):
        os.remove(os.path.join(ann, f))
    again = VOC(toy_copy, cache_dir=str(cache)).labels(ids)
    assert {i: v.tolist() for i, v in again.items()} == {i: v.tolist() for i, v in first.items()}
    # ...but not the others, proving the XMLs are really gone
    with _raises_naming(os.path.join(ann, "toy_000017.xml")):
        VOC(toy_copy, cache_dir=str(cache)).labels(["toy_000017"])


def test_label_cache_of_another_root_ignored(toy_root, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other" / "VOC2012"
    shutil.copytree(toy_root, other)
    VOC(toy_root, cache_dir=str(cache)).labels(["toy_000001"])
    true = VOC(toy_root).labels(["toy_000001"])["toy_000001"].tolist()
    # relabel toy_000001 in the copy with a class it does not have
    new = next(k for k in range(N_CLASSES) if k not in true)
    xml = other / "Annotations" / "toy_000001.xml"
    xml.write_text(re.sub(r"<name>[^<]*</name>", f"<name>{CAT_LIST[new]}</name>", xml.read_text()))
    got = VOC(str(other), cache_dir=str(cache)).labels(["toy_000001"])["toy_000001"].tolist()
    assert got == [new]
    with np.load(cache / "cls_labels.npz", allow_pickle=False) as z:
        assert str(z["root"]) == str(other)  # rewritten for the new root


def test_damaged_cache_rebuilt(toy_root, tmp_path):
    (tmp_path / "cls_labels.npz").write_bytes(b"not a zip file at all")
    labels = VOC(toy_root, cache_dir=str(tmp_path)).labels(["toy_000002"])
    assert labels["toy_000002"].tolist() == VOC(toy_root).labels(["toy_000002"])["toy_000002"].tolist()
    with np.load(tmp_path / "cls_labels.npz", allow_pickle=False) as z:
        assert z["ids"].tolist() == ["toy_000002"]


# ---- pixels

def test_grayscale_and_cmyk_jpegs_load_as_rgb(toy_copy):
    voc = VOC(toy_copy)
    h, w = voc.image("toy_000001").shape[:2]
    grey = np.tile(np.arange(w, dtype=np.uint8) * 3, (h, 1))
    Image.fromarray(grey, mode="L").save(voc.image_path("toy_000001"), quality=100)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = (200, 60, 30)
    Image.fromarray(rgb).convert("CMYK").save(voc.image_path("toy_000002"), quality=100)
    assert Image.open(voc.image_path("toy_000001")).mode == "L"
    assert Image.open(voc.image_path("toy_000002")).mode == "CMYK"
    for img in (voc.image("toy_000001"), read_image(voc.image_path("toy_000001"))):
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
        assert np.abs(img[..., 0].astype(int) - grey).max() <= 3
    for img in (voc.image("toy_000002"), read_image(voc.image_path("toy_000002"))):
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - rgb).max() <= 4


def test_mask_prefers_aug_then_voc(toy_copy):
    voc = VOC(toy_copy)
    i = "toy_000001"
    aug = read_label(os.path.join(toy_copy, "SegmentationClassAug", i + ".png"))
    other = np.zeros_like(aug)
    other[:4] = 7
    save_label_png(os.path.join(toy_copy, "SegmentationClass", i + ".png"), other)
    assert voc.mask_path(i) == os.path.join(toy_copy, "SegmentationClassAug", i + ".png")
    assert np.array_equal(voc.mask(i), aug)
    os.remove(os.path.join(toy_copy, "SegmentationClassAug", i + ".png"))
    assert voc.mask_path(i) == os.path.join(toy_copy, "SegmentationClass", i + ".png")
    m = voc.mask(i)
    assert m.dtype == np.uint8 and np.array_equal(m, other)
    assert voc.mask_path("toy_000021") is None  # test ids have no mask
    with pytest.raises(PipelineError, match="toy_000021"):
        voc.mask("toy_000021")


# ---- bad inputs: PipelineError naming the file or folder

def test_missing_root(tmp_path):
    with _raises_naming(tmp_path / "nowhere"):
        VOC(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("sub", ["JPEGImages", "Annotations"])
def test_missing_folder(toy_copy, sub):
    shutil.rmtree(os.path.join(toy_copy, sub))
    with _raises_naming(os.path.join(toy_copy, sub)):
        VOC(toy_copy)


def test_check_images_names_missing_image(toy_copy):
    voc = VOC(toy_copy)
    voc.check_images(voc.ids("train"))  # all present: no error
    os.remove(voc.image_path("toy_000005"))
    with _raises_naming(os.path.join(toy_copy, "JPEGImages", "toy_000005.jpg")):
        voc.check_images(voc.ids("train"))


def test_unparsable_xml(toy_copy):
    path = os.path.join(toy_copy, "Annotations", "toy_000003.xml")
    with open(path, "w") as f:
        f.write("<annotation><object><name>dog</name>")
    with _raises_naming(path):
        VOC(toy_copy).labels(["toy_000003"])


def test_unknown_class_name(toy_copy):
    path = os.path.join(toy_copy, "Annotations", "toy_000003.xml")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(re.sub(r"<name>[^<]*</name>", "<name>unicorn</name>", text, count=1))
    with pytest.raises(PipelineError, match=re.escape(path) + ".*unicorn"):
        VOC(toy_copy).labels(["toy_000003"])


def test_mask_size_differs_from_image(toy_copy):
    voc = VOC(toy_copy)
    path = os.path.join(toy_copy, "SegmentationClassAug", "toy_000002.png")
    m = read_label(path)
    save_label_png(path, m[:-3], palette=False)
    with _raises_naming(path):
        voc.mask("toy_000002")


def test_mask_label_out_of_range(toy_copy):
    voc = VOC(toy_copy)
    path = os.path.join(toy_copy, "SegmentationClassAug", "toy_000002.png")
    m = read_label(path).copy()
    m[0, 0] = 42
    save_label_png(path, m, palette=False)
    with pytest.raises(PipelineError, match=re.escape(path) + ".*42"):
        voc.mask("toy_000002")
    m[0, 0] = N_CLASSES  # 20 and 255 are valid
    m[0, 1] = IGNORE
    save_label_png(path, m, palette=False)
    assert voc.mask("toy_000002")[0, 0] == N_CLASSES


def test_empty_list_file(toy_copy, tmp_path):
    with open(os.path.join(toy_copy, "ImageSets", "Segmentation", "train.txt"), "w") as f:
        f.write("\n  \n")
    with pytest.raises(PipelineError, match=re.escape(toy_copy) + ".*empty|empty.*" + re.escape(toy_copy)):
        VOC(toy_copy).ids("train")
    lst = tmp_path / "empty.txt"
    lst.write_text("")
    with _raises_naming(lst):
        VOC(toy_copy).ids(str(lst))


def test_missing_list_file(toy_root):
    with pytest.raises(PipelineError, match="nonexistent_split_file.txt"):
        VOC(toy_root).ids("nonexistent_split_file.txt")


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def test_corrupt_jpeg_and_truncated_png(toy_copy):
    jpg = os.path.join(toy_copy, "JPEGImages", "toy_000004.jpg")
    with open(jpg, "wb") as f:
        f.write(os.urandom(16) + b"garbage, not a JPEG" * 20)
    with _raises_naming(jpg):
        read_image(jpg)
    with _raises_naming(jpg):
        VOC(toy_copy).image("toy_000004")
    png = os.path.join(toy_copy, "SegmentationClass", "toy_000004.png")
    _truncate(png)
    with _raises_naming(png):
        read_label(png)
    # a truncated JPEG too, decoded eagerly rather than failing later
    jpg2 = os.path.join(toy_copy, "JPEGImages", "toy_000006.jpg")
    _truncate(jpg2)
    with _raises_naming(jpg2):
        read_image(jpg2)


def test_missing_image_file(toy_root, tmp_path):
    with _raises_naming(tmp_path / "none.jpg"):
        read_image(str(tmp_path / "none.jpg"))
