"""The one metric module: confusion matrix over the label ids (0 background, 1..C the
classes, 255 ignored) and its scores, CAM-to-prediction thresholding and threshold
sweeps. Pure functions: the class count comes from the caller's dataset."""
import numpy as np

IGNORE = 255
# Thresholds swept by every CAM evaluation (background score of the argmax).
SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def confusion(pred, gt, n):
    """n x n confusion matrix (rows = ground truth, columns = prediction), 255 ignored;
    n = classes + 1 (background)."""
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


def cam_argmax(maps, threshold):
    """Per pixel, 0 (background) or 1 + the index of the winning map (K,H,W): a constant
    background score `threshold` stacked in front, argmax (ties go to background)."""
    maps = np.asarray(maps, np.float32)
    score = np.concatenate([np.full((1,) + maps.shape[1:], threshold, np.float32), maps], 0)
    return score.argmax(0)


def cam_to_label(maps, keys, threshold):
    """Prediction from per-class maps (K,H,W) of classes `keys` (0-based foreground indices):
    cam_argmax mapped to label ids."""
    ids = np.concatenate([[0], np.asarray(keys, np.int64) + 1])
    return ids[cam_argmax(maps, threshold)].astype(np.uint8)


def sweep_confusions(maps, keys, gt, thresholds, n):
    """One n x n confusion matrix per background threshold, for one image (T, n, n).
    Same tie rule as cam_to_label: background wins when a map equals the threshold.
    One pass over the pixels whatever the number of thresholds: each pixel's winning
    class and how many thresholds lie below its score are histogrammed, and threshold j's
    matrix sums the pixels above it (their class) and below it (background)."""
    maps = np.asarray(maps, np.float32)
    gt = np.asarray(gt).ravel().astype(np.int64)
    keep = gt != IGNORE
    # compare in float32 like cam_to_label, whatever the type of t (np.float64 included)
    t = np.asarray(thresholds, np.float64).astype(np.float32)
    order = np.argsort(t, kind="stable")
    if len(maps) == 0:
        return np.repeat(confusion(np.zeros(gt.shape, np.uint8), gt, n)[None], len(t), 0)
    top = maps.max(0).ravel()[keep]
    arg = (np.asarray(keys, np.int64) + 1)[maps.argmax(0).ravel()[keep]]
    below = np.searchsorted(t[order], top, side="left")  # thresholds strictly below the score
    hist = np.bincount((below * n + gt[keep]) * n + arg,
                       minlength=(len(t) + 1) * n * n).reshape(len(t) + 1, n, n)
    out = np.cumsum(hist[::-1], 0)[::-1][1:].copy()  # j-th: pixels with more than j below
    out[:, :, 0] += np.cumsum(hist.sum(2), 0)[:-1]   # the others are background
    res = np.empty_like(out)
    res[order] = out
    return res


def format_table(rows, columns=("miou", "mprecision", "mrecall", "threshold")):
    """A plain-text table: one line per (name, result dict) row, values as percentages."""
    head = f"{'':<20}" + "".join(f"{c:>12}" for c in columns)
    lines = [head]
    for name, r in rows:
        cells = "".join(f"{r[c]:>12.3f}" if c == "threshold" else f"{100 * r[c]:>12.1f}"
                        for c in columns)
        lines.append(f"{name:<20}" + cells)
    return "\n".join(lines)
