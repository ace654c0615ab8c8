"""Tests of misc.metrics against hand-computed examples, and of the CAM-folder
evaluation (pipeline.evaluate.cam_record) on a toy tree with CAM files written by the
test itself."""
import argparse
import json
import math
import os

import numpy as np
import pytest

from misc.cam_io import cam_path, save_cam
from misc.errors import PipelineError
from misc.metrics import IGNORE, cam_to_label, confusion, scores, sweep_confusions
from pipeline.evaluate import cam_record
from pipeline.registry import output
from voc12.dataloader import VOC

N_LABELS = 21  # VOC: 20 classes + background


def test_confusion_hand_example():
    gt = np.array([[0, 1, 2], [IGNORE, 1, 1]])
    pred = np.array([[0, 2, 2], [1, 1, 0]])
    # (gt, pred): (0,0) (1,2) (2,2) ignored (1,1) (1,0); rows = gt, columns = prediction
    expected = np.array([[1, 0, 0],
                         [1, 1, 1],
                         [0, 0, 1]])
    assert np.array_equal(confusion(pred, gt, n=3), expected)
    full = confusion(pred.astype(np.uint8), gt.astype(np.uint8), N_LABELS)
    assert full.shape == (N_LABELS, N_LABELS)
    assert np.array_equal(full[:3, :3], expected) and full.sum() == 5
    assert confusion(np.zeros((2, 2)), np.full((2, 2), IGNORE), N_LABELS).sum() == 0
    many = confusion(np.array([80]), np.array([80]), 81)  # COCO's 80 classes + background
    assert many.shape == (81, 81) and many[80, 80] == 1


def test_scores_hand_example():
    conf = [[6, 2, 0],
            [1, 3, 0],
            [0, 0, 0]]  # class 2 absent from ground truth and prediction
    # tp = 6, 3; fp (column - tp) = 1, 2; fn (row - tp) = 2, 1
    r = scores(conf)
    assert r["iou"][:2] == pytest.approx([6 / 9, 3 / 6])
    assert r["precision"][:2] == pytest.approx([6 / 7, 3 / 5])
    assert r["recall"][:2] == pytest.approx([6 / 8, 3 / 4])
    assert r["iou"][2] is None and r["precision"][2] is None and r["recall"][2] is None
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # 7/12, class 2 excluded
    assert r["mprecision"] == pytest.approx((6 / 7 + 3 / 5) / 2)
    assert r["mrecall"] == pytest.approx(3 / 4)
    json.dumps(r, allow_nan=False)  # JSON-safe: no NaN anywhere


def test_scores_class_never_predicted():
    # class 1 in ground truth but never predicted: IoU 0 and recall 0 count, precision undefined
    r = scores(np.array([[4, 0], [2, 0]]))
    assert r["iou"] == pytest.approx([4 / 6, 0.0])
    assert r["recall"] == pytest.approx([1.0, 0.0])
    assert r["precision"][0] == pytest.approx(4 / 6) and r["precision"][1] is None
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["mrecall"] == pytest.approx(1 / 2)
    assert r["mprecision"] == pytest.approx(4 / 6)


def test_scores_empty_matrix():
    r = scores(np.zeros((3, 3)))
    assert all(math.isnan(r[k]) for k in ("miou", "mprecision", "mrecall"))
    assert r["iou"] == [None] * 3


def test_cam_to_label_hand_example():
    maps = np.array([[[.9, .5, .2], [.6, .1, .7]],
                     [[.3, .4, .8], [.6, .5, .9]]])
    keys = [4, 14]  # label ids 5 and 15
    # (0,1) and (1,1): a map equal to the threshold loses to background;
    # (1,0): a tie between maps goes to the first
    expected = np.array([[5, 0, 15], [5, 0, 15]])
    got = cam_to_label(maps, keys, 0.5)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    assert np.array_equal(cam_to_label(maps, keys, 0.95), np.zeros((2, 3)))
    assert np.array_equal(cam_to_label(maps, keys, 0.0), [[5, 5, 15], [5, 15, 15]])
    empty = cam_to_label(np.zeros((0, 2, 3)), [], 0.3)
    assert empty.shape == (2, 3) and not empty.any()


@pytest.mark.parametrize("k", [0, 1, 3])
def test_sweep_confusions_equals_thresholding(k):
    rng = np.random.default_rng(k)
    h, w = 13, 17
    # values on a 0.05 grid so that maps tie with each other and with the thresholds
    maps = (rng.integers(0, 21, (k, h, w)) * 0.05).astype(np.float32)
    keys = np.sort(rng.choice(20, k, replace=False))
    gt = rng.integers(0, 21, (h, w)).astype(np.uint8)
    gt[rng.random((h, w)) < .1] = IGNORE
    for c, key in enumerate(keys):  # make the maps matter: gt follows them in places
        gt[maps[c] > .6] = key + 1
    thresholds = [0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 0.95]
    got = sweep_confusions(maps, keys, gt, thresholds, N_LABELS)
    expected = np.stack([confusion(cam_to_label(maps, keys, t), gt, N_LABELS) for t in thresholds])
    assert got.shape == (len(thresholds), 21, 21)
    assert np.array_equal(got, expected)
    if k == 0:
        assert got[:, :, 1:].sum() == 0  # all background
    else:
        assert not np.array_equal(got[0], got[-1])  # the threshold changes the prediction
    # numpy float64 thresholds (e.g. from np.arange) follow the same float32 tie rule
    assert np.array_equal(sweep_confusions(maps, keys, gt, np.array(thresholds), N_LABELS), expected)
    # thresholds in any order, repeated: one matrix each, in the order given
    shuffled = [0.5, 0.05, 0.95, 0.5, 0.3]
    assert np.array_equal(sweep_confusions(maps, keys, gt, shuffled, N_LABELS),
                          np.stack([expected[thresholds.index(t)] for t in shuffled]))


def test_scores_with_80_classes_by_hand():
    """COCO's 80 classes: classes neither in the ground truth nor predicted have no score
    and stay out of the means; a prediction on an ignored pixel does not count."""
    gt = np.array([[0, 1, 1, 40], [80, 80, IGNORE, 0]])
    pred = np.array([[0, 1, 40, 40], [80, 0, 3, 0]])
    conf = confusion(pred, gt, 81)
    assert conf.shape == (81, 81) and conf.sum() == 7 and conf[1, 40] == 1 and conf[80, 0] == 1
    s = scores(conf)
    assert len(s["iou"]) == 81 and sum(v is not None for v in s["iou"]) == 4  # 0, 1, 40, 80
    assert s["iou"][3] is None and s["iou"][0] == pytest.approx(2 / 3)
    assert [s["iou"][k] for k in (1, 40, 80)] == [0.5, 0.5, 0.5]
    assert s["miou"] == pytest.approx((2 / 3 + 1.5) / 4)
    assert s["mprecision"] == pytest.approx((2 / 3 + 1 + 0.5 + 1) / 4)
    assert s["mrecall"] == pytest.approx(0.75)
    maps = np.zeros((2, 2, 4), np.float32)
    maps[0, 0, 1:3], maps[1, 0, 3] = 0.9, 0.8  # classes 1 and 40 (keys 0, 39)
    sweep = sweep_confusions(maps, [0, 39], gt, [0.5, 0.85], 81)
    assert sweep[0][1, 1] == 2 and sweep[0][40, 40] == 1 and sweep[1][40, 0] == 1


def test_sweep_tie_rule_with_float64_threshold():
    # 0.1 is not exact in float32: a map equal to float32(0.1) ties with the threshold
    maps = np.full((1, 2, 2), np.float32(0.1))
    gt = np.ones((2, 2), np.uint8)
    assert not cam_to_label(maps, [0], 0.1).any()
    for t in (0.1, np.float64(0.1)):
        conf = sweep_confusions(maps, [0], gt, [t], N_LABELS)[0]
        assert conf[1, 0] == 4 and conf[1, 1] == 0


def _write_perfect_cams(voc, ids, cam_dir):
    labels = voc.labels(ids)
    for i in ids:
        gt = voc.mask(i)
        keys = labels[i]
        high = np.stack([(gt == k + 1).astype(np.float32) for k in keys])
        save_cam(cam_path(cam_dir, i), keys, high[:, ::4, ::4], high)
    return labels


def _args(tmp_path, thres=0.5):
    """What cam_record needs of a run: result/ and the ResNet CAMs' fixed threshold."""
    return argparse.Namespace(result_dir=str(tmp_path), cam_eval_thres=thres, cam_scales=(1.0,))


def test_cam_record_perfect_cams(toy_root, tmp_path):
    voc = VOC(toy_root, cache_dir=str(tmp_path))
    ids = voc.ids("train")
    args = _args(tmp_path)
    labels = _write_perfect_cams(voc, ids, str(tmp_path / "cam"))
    res = cam_record(voc, ids, "train", output("cam"), args)
    assert res["fixed"]["threshold"] == 0.5 and res["n_images"] == len(ids)
    assert res["fixed"]["miou"] == 1.0 and res["fixed"]["mprecision"] == 1.0
    assert res["fixed"]["mrecall"] == 1.0 and res["list"] == "train"
    present = {0} | {int(k) + 1 for i in ids for k in labels[i]}
    assert len(present) >= 3 and res["class_names"] == list(voc.label_names)
    for c in range(21):
        assert (res["per_class"]["iou"][c] == 1.0) if c in present else \
            (res["per_class"]["iou"][c] is None), c
    ths = [r["threshold"] for r in res["sweep"]]
    assert ths == sorted(ths) and 0.5 in ths and len(ths) >= 10
    assert all(r["miou"] == 1.0 for r in res["sweep"])  # maps are 0 or 1: any t in (0, 1)
    assert res["best"]["miou"] == 1.0
    # the contour F-score: perfect at every threshold, per foreground class that appears
    assert all(r["contour_f"] == 1.0 for r in res["sweep"]) and res["fixed"]["contour_f"] == 1.0
    for c in range(21):
        assert (res["per_class"]["contour_f"][c] == 1.0) if c in present - {0} else \
            (res["per_class"]["contour_f"][c] is None), c
    assert res["per_class"]["contour_precision"][0] is None
    json.dumps(res, allow_nan=False)


def test_cam_record_scores_drop_for_blank_cams(toy_root, tmp_path):
    voc = VOC(toy_root, cache_dir=str(tmp_path))
    ids = voc.ids("train")
    labels = _write_perfect_cams(voc, ids, str(tmp_path / "cam"))
    # blank the maps of one image: its objects become background
    i = ids[0]
    h, w = voc.mask(i).shape
    k = len(labels[i])
    save_cam(cam_path(str(tmp_path / "cam"), i), labels[i], np.zeros((k, (h + 3) // 4, (w + 3) // 4)),
             np.zeros((k, h, w)))
    res = cam_record(voc, ids, "train", output("cam"), _args(tmp_path, 0.33))
    ths = [r["threshold"] for r in res["sweep"]]
    assert {0.25, 0.33, 0.75} <= set(ths)  # the fixed threshold joins the sweep
    assert res["fixed"]["miou"] < 1.0 and res["fixed"]["mrecall"] < 1.0
    pc = res["per_class"]
    assert pc["precision"][0] < 1.0 and pc["recall"][0] == 1.0  # background over-predicted
    for key in labels[i]:  # never wrongly predicted (None when only this image has it)
        assert pc["precision"][key + 1] in (1.0, None)
        assert pc["recall"][key + 1] < 1.0
        # its contours are missed too: contour recall drops, precision stays 1
        assert pc["contour_recall"][key + 1] < 1.0 and pc["contour_precision"][key + 1] == 1.0
    assert res["fixed"]["contour_f"] < 1.0


def test_cam_record_missing_cam_names_producer(toy_root, tmp_path):
    voc = VOC(toy_root, cache_dir=str(tmp_path))
    ids = voc.ids("train")
    cam_dir = str(tmp_path / "cam")
    _write_perfect_cams(voc, ids, cam_dir)
    os.remove(cam_path(cam_dir, ids[3]))
    with pytest.raises(PipelineError, match="run step make_cam") as e:
        cam_record(voc, ids, "train", output("cam"), _args(tmp_path))
    assert cam_dir in str(e.value) and ids[3] in str(e.value)


def test_cam_record_size_mismatch(toy_root, tmp_path):
    voc = VOC(toy_root, cache_dir=str(tmp_path))
    ids = voc.ids("train")[:2]
    cam_dir = str(tmp_path / "cam")
    labels = _write_perfect_cams(voc, ids, cam_dir)
    k = len(labels[ids[1]])
    save_cam(cam_path(cam_dir, ids[1]), labels[ids[1]], np.zeros((k, 2, 2)), np.zeros((k, 7, 7)))
    with pytest.raises(PipelineError, match=cam_path(cam_dir, ids[1])):
        cam_record(voc, ids, "train", output("cam"), _args(tmp_path))
