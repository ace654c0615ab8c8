"""Evaluations into one record shape, result/eval/<output>.json: name, title, folder,
list, n_images, class_names, fixed (scores at the output's fixed threshold; None for
label maps), best (at the best-mIoU threshold of the sweep, or the label maps' scores),
sweep, per_class (IoU, precision, recall, contour F / precision / recall at best) and
protocol (how the output was made and scored). Scores: misc.metrics.SCORES (mIoU, mean
precision and recall, the contour F-score). Also the firing disagreement of two CAM
sources."""
import json
import os

import numpy as np
from tqdm import tqdm

from misc.cam_io import cam_path, load_cam
from misc.errors import PipelineError
from misc.fileio import atomic_path, require_files
from misc.imutils import read_label
from misc.metrics import (IGNORE, SCORES, SWEEP_THRESHOLDS, confusion, contour_counts,
                          contour_scores, format_table, scores, sweep_counts)
from misc.torchutils import is_main
from pipeline import dataset
from pipeline.registry import STEPS, producer, record_path, require, resolve

def _short(r):
    return {k: r[k] for k in SCORES}


def _record(o, args, ds, ids, list_name, best, fixed=None, sweep=None, **extra):
    return {"name": o.fmt(args), "title": o.title_for(args), "folder": o.path(args),
            "list": list_name, "n_images": len(ids), "class_names": list(ds.label_names),
            "fixed": fixed, "best": _short(best), "sweep": sweep,
            "per_class": {k.removeprefix("class_"): best[k] for k in best
                          if k in ("iou", "precision", "recall") or k.startswith("class_")},
            "protocol": {**o.protocol(args), "threshold": best["threshold"],
                         **({"fixed_threshold": fixed["threshold"]} if fixed else {})}, **extra}


def cam_record(ds, ids, list_name, o, args):
    """Score the full-size maps of CAM output `o` against the masks of `ids`, at its fixed
    threshold and at every threshold of the sweep."""
    fixed_thr = o.threshold(args)
    thresholds = sorted(set(SWEEP_THRESHOLDS) | {fixed_thr})
    folder = o.path(args)
    require(o, args, ids, "CAM files")
    labels = ds.labels(ids)
    n = ds.n_classes + 1
    conf = np.zeros((len(thresholds), n, n), np.int64)
    edges = np.zeros((len(thresholds), 5, n), np.int64)  # contour counts
    for i in tqdm(ids, desc=f"eval {o.fmt(args)}"):
        c = load_cam(cam_path(folder, i), labels[i], ds.n_classes)
        gt = ds.mask(i)
        if c["high_res"].shape[1:] != gt.shape:
            raise PipelineError(f"{cam_path(folder, i)}: map size {c['high_res'].shape[1:]} "
                                f"differs from the mask {gt.shape}; remake the CAMs")
        m, e = sweep_counts(c["high_res"], c["keys"], gt, thresholds, n)
        conf += m
        edges += e
    sweep = [dict(threshold=t, **scores(m), **contour_scores(e))
             for t, m, e in zip(thresholds, conf, edges)]
    best = max(sweep, key=lambda r: r["miou"])
    fixed = next(r for r in sweep if r["threshold"] == fixed_thr)
    return _record(o, args, ds, ids, list_name, best, _short(fixed), [_short(r) for r in sweep])


def label_record(ds, ids, list_name, o, args, folder=None):
    """Score a folder of label PNGs (<id>.png; a 255 in a prediction counts as background)
    against the masks of `ids`; `folder` overrides o.path (the segmenter's split)."""
    folder = folder or o.path(args)
    require_files(folder, ids, ".png", "label PNGs", producer(o.name))
    n = ds.n_classes + 1
    conf = np.zeros((n, n), np.int64)
    edges = np.zeros((5, n), np.int64)  # contour counts
    for i in tqdm(ids, desc=f"eval {os.path.basename(folder)}"):
        p = os.path.join(folder, f"{i}.png")
        pred, gt = read_label(p), ds.mask(i)
        if pred.shape != gt.shape:
            raise PipelineError(f"{p}: size {pred.shape} differs from the mask {gt.shape}; "
                                f"rerun the step that makes it")
        pred = np.where(pred == IGNORE, 0, pred)
        conf += confusion(pred, gt, n)
        edges += contour_counts(pred, gt, n)
    return _record(o, args, ds, ids, list_name, {"threshold": o.threshold(args), **scores(conf),
                                                 **contour_scores(edges)})


def evaluated_by(step_name, args):
    """The outputs a step's table entry says it evaluates, resolved for this run."""
    step = next(s for s in STEPS if s.name == step_name)
    return [o for token in step.evaluates for o in resolve(token, args)]


def evaluate_outputs(args, outputs, list_name=None, folder=None):
    """Score each output on `list_name` (default --eval_list) and write its record:
    [(output, record, path)]. `folder` overrides where label maps are read."""
    ds = dataset(args)
    list_name = list_name or args.eval_list
    ids = ds.ids(list_name)
    done = []
    for o in outputs:
        rec = cam_record(ds, ids, list_name, o, args) if o.kind == "cams" else \
            label_record(ds, ids, list_name, o, args, folder)
        done.append((o, rec, write_record(rec, o, args)))
    return done


def write_record(rec, o, args):
    """Write an evaluation record; returns its path."""
    path = record_path(o, args)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
    return path


def print_records(rows):
    """Print (name, record) rows: fixed and best scores of CAM records, scores of labels."""
    table = []
    for name, r in rows:
        if r["fixed"]:
            table.append((f"{name} @fixed", r["fixed"]))
        table.append((f"{name} @best" if r["fixed"] else name,
                      {**r["best"], "threshold": r["best"]["threshold"] or 0.0}))
    print(format_table(table))


def evaluation_step(args, step_name):
    """What a step whose table entry evaluates one CAM output does: score it, print the
    record, return the step's summary line (rank 0 only)."""
    if not is_main():
        return "evaluated on rank 0"
    [(o, rec, path)] = evaluate_outputs(args, evaluated_by(step_name, args))
    print_records([(o.title_for(args), rec)])
    return summary_line(rec, path)


def summary_line(rec, path):
    """The step's one-line summary of a record."""
    b, f = rec["best"], rec["fixed"]
    s = f"mIoU {100 * b['miou']:.1f} (precision {100 * b['mprecision']:.1f}, recall " \
        f"{100 * b['mrecall']:.1f}; contour F {100 * b['contour_f']:.1f})"
    if f:
        s = (f"mIoU {100 * f['miou']:.1f} (precision {100 * f['mprecision']:.1f}, recall "
             f"{100 * f['mrecall']:.1f}; contour F {100 * f['contour_f']:.1f}) at "
             f"{f['threshold']:.2f}; best mIoU {100 * b['miou']:.1f} at {b['threshold']:.2f}")
    return f"{s} -> {path}"


def firing_disagreement(ds, ids, dir_a, thr_a, dir_b, thr_b):
    """Over ground-truth foreground pixels: the share where source a's map of the true
    class exceeds its threshold and b's does not ('a_only'), the reverse ('b_only'),
    both, neither. What an ensemble of two CAM sources can gain comes from a_only/b_only."""
    labels = ds.labels(ids)
    counts = np.zeros(4, np.int64)  # a_only, b_only, both, neither
    for i in tqdm(ids, desc="disagreement", leave=False):
        gt = ds.mask(i)
        ys, xs = ((gt > 0) & (gt != IGNORE)).nonzero()
        lab, fires = gt[ys, xs], []
        for d, t in ((dir_a, thr_a), (dir_b, thr_b)):
            c = load_cam(cam_path(d, i), labels[i], ds.n_classes)
            lut = np.full(256, -1)  # label id -> its map in the file (-1: no map)
            lut[c["keys"] + 1] = np.arange(len(c["keys"]))
            k = lut[lab]
            f = np.zeros(len(lab), bool)
            f[k >= 0] = c["high_res"][k[k >= 0], ys[k >= 0], xs[k >= 0]] > t
            fires.append(f)
        a, b = fires
        counts += [(a & ~b).sum(), (~a & b).sum(), (a & b).sum(), (~a & ~b).sum()]
    total = max(int(counts.sum()), 1)
    return dict(zip(("a_only", "b_only", "both", "neither"), (counts / total).tolist()))
