"""MS COCO 2014: the conversion rule and the reader on a hand-written JSON (overlap, crowd,
empty image, categories out of order), the toy COCO against its own pre-converted masks,
the coco_masks step and its check, the index cache, bad inputs, and every step 0-22 on a
small toy COCO whose lists include an image without annotation."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

import run_sample
from conftest import TINY
from misc.cam_io import load_cam
from misc.errors import PipelineError
from misc.imutils import read_label, save_jpeg, save_label_png
from voc12 import toy_coco
from voc12.coco import COCO, semantic_mask
from voc12.datasets import detect, open_dataset

IGNORE = 255


def test_rule_by_hand():
    """Crowd first, then largest to smallest (the smallest wins an overlap), no borders."""
    big, small, crowd = (np.zeros((4, 6), bool) for _ in range(3))
    big[0:3, 0:4] = True      # 12 px, class 3
    small[1:4, 2:5] = True    # 9 px, class 7, overlaps big on rows 1-2, cols 2-3
    crowd[0:2, 3:6] = True    # 6 px crowd region of class 1, under both instances
    inst = [(7, False, 2, small), (1, True, 9, crowd), (3, False, 5, big)]  # JSON order
    assert semantic_mask(inst, 4, 6).tolist() == [[3, 3, 3, 3, 1, 1],
                                                  [3, 3, 7, 7, 7, 1],
                                                  [3, 3, 7, 7, 7, 0],
                                                  [0, 0, 7, 7, 7, 0]]
    assert semantic_mask(inst, 4, 6, crowd="ignore").tolist() == [[3, 3, 3, 3, IGNORE, IGNORE],
                                                                  [3, 3, 7, 7, 7, IGNORE],
                                                                  [3, 3, 7, 7, 7, 0],
                                                                  [0, 0, 7, 7, 7, 0]]
    same = np.zeros((4, 6), bool)
    same[1:4, 2:5] = True  # as large as `small`: the lower annotation id is painted first
    assert (semantic_mask([(5, False, 8, same), (7, False, 2, small)], 4, 6) == 5).sum() == 9
    assert not semantic_mask([], 4, 6).any()


def _rle(mask):
    return {"size": list(mask.shape), "counts": toy_coco.rle_counts(mask)}


def write_coco(root, folder="train2014"):
    """A COCO root by hand: 3 images of 6x8 px, categories 90, 1, 18 listed out of order."""
    h, w = 6, 8
    crowd = np.zeros((h, w), bool)
    crowd[3:6, 0:4] = True
    images = [{"id": 9, "file_name": f"COCO_{folder}_000000000009.jpg", "height": h, "width": w},
              {"id": 25, "file_name": f"COCO_{folder}_000000000025.jpg", "height": h, "width": w},
              {"id": 30, "file_name": f"COCO_{folder}_000000000030.jpg", "height": h, "width": w}]
    anns = [  # polygons on pixel corners cover whole pixels
        {"id": 1, "image_id": 9, "category_id": 18, "iscrowd": 0,
         "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]]},                 # 24 px dog
        {"id": 2, "image_id": 9, "category_id": 1, "iscrowd": 0,
         "segmentation": [[4, 2, 8, 2, 8, 6, 4, 6]]},                 # 16 px person on top
        {"id": 3, "image_id": 25, "category_id": 1, "iscrowd": 1, "segmentation": _rle(crowd)},
        {"id": 4, "image_id": 25, "category_id": 90, "iscrowd": 0,
         "segmentation": [[2, 4, 4, 4, 4, 6, 2, 6]]}]                 # 4 px toothbrush in it
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
            {"id": 18, "name": "dog"}]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{folder}.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    for m in images:
        save_jpeg(os.path.join(root, folder, m["file_name"]), np.full((h, w, 3), 128, np.uint8))
    return root


def test_reader_on_a_json_written_by_hand(tmp_path):
    root = write_coco(str(tmp_path / "coco"))
    ds = COCO(root, str(tmp_path / "result"))
    assert detect(root) == "coco" and isinstance(open_dataset("auto", root), COCO)
    assert ds.class_names == ("person", "dog", "toothbrush")  # ascending category id
    assert ds.label_names[0] == "background" and ds.n_classes == 3
    a, b, empty = (f"COCO_train2014_{n:012d}" for n in (9, 25, 30))
    assert ds.ids("train") == [a, b] and ds.ids("train_all") == [a, b, empty]
    labels = ds.labels([a, b, empty])
    assert [labels[i].tolist() for i in (a, b, empty)] == [[0, 1], [0, 2], []]
    assert ds.convert_mask(a).tolist() == [[2, 2, 2, 2, 2, 2, 0, 0], [2, 2, 2, 2, 2, 2, 0, 0],
                                           [2, 2, 2, 2, 1, 1, 1, 1], [2, 2, 2, 2, 1, 1, 1, 1],
                                           [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]]
    crowd = ds.convert_mask(b, crowd="ignore")  # the crowd region rows 3-5, cols 0-3
    assert (crowd[3:6, 0:4] == [[IGNORE] * 4, [IGNORE, IGNORE, 3, 3], [IGNORE, IGNORE, 3, 3]]).all()
    assert not crowd[:3].any() and not crowd[:, 4:].any()
    assert (ds.convert_mask(b)[3:6, 0:4] == [[1, 1, 1, 1], [1, 1, 3, 3], [1, 1, 3, 3]]).all()
    assert not ds.convert_mask(empty).any() and not ds.mask(empty).any()  # all background
    lst = tmp_path / "ids.txt"
    lst.write_text(f"000000000025\n{a} extra\n")  # COCO image ids or file stems
    assert ds.ids(str(lst)) == [b, a]
    with pytest.raises(PipelineError, match="run step coco_masks"):
        ds.mask(a)
    with pytest.raises(PipelineError, match="instances_val2014.json: missing"):
        ds.ids("val")


def test_index_is_cached_and_refreshed(tmp_path, monkeypatch):
    root = write_coco(str(tmp_path / "coco"))
    cache = str(tmp_path / "result")
    COCO(root, cache)
    assert os.path.exists(os.path.join(cache, "coco_index.npz"))
    monkeypatch.setattr(json, "load", lambda f: pytest.fail("JSON parsed again"))
    assert COCO(root, cache).ids("train_all")[-1] == "COCO_train2014_000000000030"
    monkeypatch.undo()
    path = os.path.join(root, "annotations", "instances_train2014.json")
    with open(path) as f:
        d = json.load(f)
    d["categories"][0]["name"] = "brush"
    with open(path, "w") as f:
        json.dump(d, f)
    assert COCO(root, cache).class_names[-1] == "brush"  # the changed JSON is read again


def test_bad_inputs_name_the_file(tmp_path):
    root = write_coco(str(tmp_path / "coco"))
    path = os.path.join(root, "annotations", "instances_train2014.json")
    os.makedirs(tmp_path / "nothing_here" / "annotations")
    with pytest.raises(PipelineError, match="annotations/instances_train2014.json: no instance"):
        COCO(str(tmp_path / "nothing_here"))
    with open(path) as f:
        good = f.read()
    with open(path, "w") as f:
        f.write(good[:40])
    with pytest.raises(PipelineError, match="instances_train2014.json: not a COCO instance JSON"):
        COCO(root)
    d = json.loads(good)
    d["annotations"][0]["category_id"] = 5
    with open(path, "w") as f:
        json.dump(d, f)
    with pytest.raises(PipelineError, match="instances_train2014.json: .*category id 5"):
        COCO(root)
    with open(path, "w") as f:
        f.write(good)
    ds = COCO(root)
    i = "COCO_train2014_000000000009"
    mask = os.path.join(root, "SegmentationClass", "train2014", f"{i}.png")
    save_label_png(mask, np.full((6, 8), 4, np.uint8), palette=False)  # 3 classes: 4 is too high
    with pytest.raises(PipelineError, match=f"{mask}: label ids \\[4\\] outside 0-3"):
        ds.mask(i)
    os.remove(ds.image_path(i))
    with pytest.raises(PipelineError, match=f"{i}.jpg: image of id"):
        ds.check_images([i])
    with pytest.raises(PipelineError, match="'COCO_val2014_1' is not an image"):
        ds.labels(["COCO_val2014_1"])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A small toy COCO: 8 train images (one without annotation), 2 val, 64 px."""
    return toy_coco.generate(str(tmp_path_factory.mktemp("toy_coco")), seed=0, n_train=8,
                             n_val=2, size=64, quiet=True)


def test_toy_coco_json_and_its_pre_converted_masks(toy, tmp_path):
    d = json.load(open(os.path.join(toy, "annotations", "instances_train2014.json")))
    seg = [a["segmentation"] for a in d["annotations"]]
    assert any(isinstance(s, list) for s in seg)  # polygons
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in seg)  # RLE
    assert any(a["iscrowd"] and isinstance(a["segmentation"]["counts"], list)
               for a in d["annotations"])  # crowd regions as uncompressed RLE
    assert [c["id"] for c in d["categories"]] != sorted(c["id"] for c in d["categories"])
    ds = COCO(toy, str(tmp_path))
    assert ds.n_classes == 80 and ds.class_names[:3] == ("person", "bicycle", "car")
    every = ds.ids("train_all") + ds.ids("val_all")
    labels = ds.labels(every)
    assert sum(len(k) == 0 for k in labels.values()) >= 1 and max(map(len, labels.values())) >= 4
    for i in every:
        m = ds.mask(i)  # the provided PNG (an all-background one for the empty image)
        assert (ds.convert_mask(i) == m).all()  # the toy paints by the conversion rule
        assert sorted(set(np.unique(m).tolist()) - {0}) == (labels[i] + 1).tolist()
        assert (ds.mask_path(i) is None) == (len(labels[i]) == 0)


def test_coco_masks_step_converts_once_and_reports_differences(toy, tmp_path):
    root = str(tmp_path / "COCO2014")
    shutil.copytree(toy, root)
    ds = COCO(root)
    ids = ds.ids("train")
    damaged = ds.provided_mask_path(ids[1])
    m = read_label(damaged).copy()
    free = max(set(range(1, 81)) - set(np.unique(m).tolist()))  # a class the image lacks
    changed = int((m[:4, :5] != free).sum())
    m[:4, :5] = free
    save_label_png(damaged, m, palette=False)
    os.remove(ds.provided_mask_path(ids[2]))  # route (b) only for this one
    work = tmp_path / "w"
    flags = ["--data_root", root, "--work_dir", str(work), *TINY, "--preset", "toy_coco"]
    run_sample.main(flags + ["--steps", "0"])
    res = work / "result"
    assert sorted(os.listdir(res / "coco_masks")) == sorted([f"{i}.png" for i in ids] +
                                                            ["rule.json"] + [
        f"{i}.png" for i in COCO(root).ids("val")])
    with open(res / "coco_masks_check.csv") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert ids[2] not in rows and len(rows) == len(ids) - 1 + len(COCO(root).ids("val"))
    assert int(rows[ids[1]]["differ"]) == changed
    assert rows[ids[1]]["classes_only_provided"] == ds.label_names[free]
    assert all(r["differ"] == "0" and not r["classes_only_ours"] for i, r in rows.items()
               if i != ids[1])
    reader = COCO(root, str(res))
    assert reader.mask_path(ids[2]) == str(res / "coco_masks" / f"{ids[2]}.png")
    assert (reader.mask(ids[2]) == reader.convert_mask(ids[2])).all()
    before = os.path.getmtime(res / "coco_masks" / f"{ids[0]}.png")
    run_sample.main(flags + ["--steps", "coco_masks"])  # resumable: nothing converted again
    assert os.path.getmtime(res / "coco_masks" / f"{ids[0]}.png") == before
    with pytest.raises(PipelineError, match="rule.json: these masks were converted with "
                                            "--coco_crowd class"):
        run_sample.main(flags + ["--steps", "0", "--coco_crowd", "ignore"])


def test_every_step_on_a_toy_coco_with_an_unannotated_image(toy, tmp_path):
    ds = COCO(toy)
    empty = [i for i, k in ds.labels(ds.ids("train_all")).items() if len(k) == 0]
    few = tmp_path / "few.txt"  # CAMs, labels and the segmenter on 5 images, the empty one first
    few.write_text("\n".join(empty[:1] + ds.ids("train")[:4]))
    work = tmp_path / "w"
    lists = ["--train_list", "train_all", "--infer_list", str(few), "--eval_list", str(few)]
    run_sample.main(["--data_root", toy, "--work_dir", str(work), *TINY, "--preset", "toy_coco",
                     *lists, "--draw_n", "1"])
    res = work / "result"
    assert (res / "figures" / f"grid_{empty[0]}.png").exists()  # drawn too
    for folder in ("cam", "vit_cam", "or_cam", "and_cam", "naive_cam", "orandnet_cam"):
        c = load_cam(res / folder / f"{empty[0]}.npz", [], 80)
        assert c["keys"].size == 0 and c["high_res"].shape[0] == 0  # no classes, no maps
    for folder in ("ir_label", "sem_seg"):
        assert not read_label(res / folder / f"{empty[0]}.png").any()  # all background
    summary = json.loads((res / "summary.json").read_text())
    assert summary["dataset"] == "MS COCO 2014"
    assert all(r["miou"] is not None for r in summary["rows"])
    assert all(len(r["per_class_iou"]) == 81 for r in summary["rows"])
    assert summary["rows"][0]["evaluated_on"] == f"{few} (5 images)"
    md = (res / "summary.md").read_text()
    assert "dataset MS COCO 2014" in md and "## Per-class IoU" in md
    assert not list(res.glob("*.tar.gz"))  # no test server for COCO: nothing packed
    assert (res / "figures" / "class_iou.png").exists() and list((res / "figures").glob("grid_*"))
