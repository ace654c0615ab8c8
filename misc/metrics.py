"""The one metric module: confusion matrix over 21 classes (255 ignored) and its scores,
CAM-to-prediction thresholding, and threshold sweeps. Every eval step uses it."""
import json
import os

import numpy as np
from tqdm import tqdm

from misc.cam_io import cam_path, load_cam
from misc.config import SWEEP_THRESHOLDS
from misc.errors import PipelineError
from misc.fileio import atomic_path, require_files
from voc12.classes import CLASS_NAMES, IGNORE

N_LABELS = len(CLASS_NAMES)


def confusion(pred, gt, n=N_LABELS):
    """n x n confusion matrix (rows = ground truth, columns = prediction), 255 ignored."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = gt != IGNORE
    return np.bincount(n * gt[keep] + pred[keep], minlength=n * n).reshape(n, n)


def scores(conf):
    """Per-class IoU, precision, recall and their means (over classes with a defined value)."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    # a class absent from both prediction and ground truth has no score; skip it in the mean
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    return {"miou": mean(iou), "mprecision": mean(precision), "mrecall": mean(recall),
            "iou": _listify(iou), "precision": _listify(precision), "recall": _listify(recall)}


def _listify(v):
    # JSON has no NaN: an undefined score is written as null
    return [None if not np.isfinite(x) else float(x) for x in v]


def cam_to_label(maps, keys, threshold):
    """Prediction from per-class maps (K,H,W) of classes `keys` (0-based foreground indices):
    a constant background score `threshold` stacked in front, argmax, mapped to label ids."""
    maps = np.asarray(maps, np.float32)
    score = np.concatenate([np.full((1,) + maps.shape[1:], threshold, np.float32), maps], 0)
    ids = np.concatenate([[0], np.asarray(keys, np.int64) + 1])
    return ids[score.argmax(0)].astype(np.uint8)


def sweep_confusions(maps, keys, gt, thresholds):
    """One confusion matrix per background threshold, for one image (T, 21, 21).
    Same tie rule as cam_to_label: background wins when a map equals the threshold."""
    maps = np.asarray(maps, np.float32)
    if len(maps) == 0:
        return np.stack([confusion(np.zeros(gt.shape, np.uint8), gt) for _ in thresholds])
    top, arg = maps.max(0), (np.asarray(keys, np.int64) + 1)[maps.argmax(0)]
    # compare in float32 like cam_to_label, whatever the type of t (np.float64 included)
    return np.stack([confusion(np.where(top > np.float32(t), arg, 0), gt) for t in thresholds])


def format_table(rows, columns=("miou", "mprecision", "mrecall", "threshold")):
    """A plain-text table: one line per (name, result dict) row, values as percentages."""
    head = f"{'':<20}" + "".join(f"{c:>12}" for c in columns)
    lines = [head]
    for name, r in rows:
        cells = "".join(f"{r[c]:>12.3f}" if c == "threshold" else f"{100 * r[c]:>12.1f}"
                        for c in columns)
        lines.append(f"{name:<20}" + cells)
    return "\n".join(lines)


def evaluate_cam_dir(voc, ids, cam_dir, threshold, thresholds=None, producer="the CAM step"):
    """Score the full-size maps of a CAM folder against the masks of `ids`, at `threshold`
    and at every threshold of the sweep. Returns the dict written by `report`."""
    thresholds = sorted(set(thresholds or SWEEP_THRESHOLDS) | {threshold})
    require_files(cam_dir, ids, ".npz", "CAM files", producer)
    labels = voc.labels(ids)
    conf = np.zeros((len(thresholds), N_LABELS, N_LABELS), np.int64)
    for i in tqdm(ids, desc=f"eval {os.path.basename(cam_dir)}"):
        c = load_cam(cam_path(cam_dir, i), labels[i])
        gt = voc.mask(i)
        if c["high_res"].shape[1:] != gt.shape:
            raise PipelineError(f"{cam_path(cam_dir, i)}: map size {c['high_res'].shape[1:]} "
                                f"differs from the mask {gt.shape}; remake the CAMs")
        conf += sweep_confusions(c["high_res"], c["keys"], gt, thresholds)
    sweep = [dict(threshold=t, **scores(m)) for t, m in zip(thresholds, conf)]
    best = max(sweep, key=lambda r: r["miou"])
    fixed = next(r for r in sweep if r["threshold"] == threshold)
    short = lambda r: {k: r[k] for k in ("threshold", "miou", "mprecision", "mrecall")}  # noqa
    return {**fixed, "class_names": CLASS_NAMES, "n_images": len(ids), "best": best,
            "sweep": [short(r) for r in sweep]}


def report(res, json_path, name):
    """Print the fixed-threshold and best-threshold rows, write the JSON; returns a summary."""
    with atomic_path(json_path) as tmp, open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    print(format_table([(f"{name} @fixed", res), (f"{name} @best", res["best"])]))
    return (f"mIoU {100 * res['miou']:.1f} (precision {100 * res['mprecision']:.1f}, recall "
            f"{100 * res['mrecall']:.1f}) at {res['threshold']:.2f}; best mIoU "
            f"{100 * res['best']['miou']:.1f} at {res['best']['threshold']:.2f} -> {json_path}")


def firing_disagreement(voc, ids, dir_a, thr_a, dir_b, thr_b):
    """Over ground-truth foreground pixels: the share where source a's map of the true
    class exceeds its threshold and b's does not ('a_only'), the reverse ('b_only'),
    both, neither. What an ensemble of two CAM sources can gain comes from a_only/b_only."""
    labels = voc.labels(ids)
    counts = np.zeros(4, np.int64)  # a_only, b_only, both, neither
    for i in tqdm(ids, desc="disagreement", leave=False):
        gt = voc.mask(i)
        fires = []
        for d, t in ((dir_a, thr_a), (dir_b, thr_b)):
            c = load_cam(cam_path(d, i), labels[i])
            full = np.zeros((N_LABELS,) + gt.shape, bool)  # per label id: map > threshold
            full[c["keys"] + 1] = c["high_res"] > t
            fg = (gt > 0) & (gt != IGNORE)
            fires.append(full[gt[fg], fg.nonzero()[0], fg.nonzero()[1]])
        a, b = fires
        counts += [(a & ~b).sum(), (~a & b).sum(), (a & b).sum(), (~a & ~b).sum()]
    total = max(int(counts.sum()), 1)
    return dict(zip(("a_only", "b_only", "both", "neither"), (counts / total).tolist()))


def evaluate_label_dir(voc, ids, folder, producer):
    """Score a folder of label PNGs (<id>.png, ids 0-20; a 255 in a prediction counts as
    background) against the masks of `ids`; returns scores() plus n_images."""
    from misc.imutils import read_label
    require_files(folder, ids, ".png", "label PNGs", producer)
    paths = [os.path.join(folder, f"{i}.png") for i in ids]
    conf = np.zeros((N_LABELS, N_LABELS), np.int64)
    for i, p in tqdm(list(zip(ids, paths)), desc=f"eval {os.path.basename(folder)}"):
        pred, gt = read_label(p), voc.mask(i)
        if pred.shape != gt.shape:
            raise PipelineError(f"{p}: size {pred.shape} differs from the mask {gt.shape}; "
                                f"rerun step {producer}")
        conf += confusion(np.where(pred == IGNORE, 0, pred), gt)
    return {**scores(conf), "n_images": len(ids)}
