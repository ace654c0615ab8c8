"""The one metric module: confusion matrix over the label ids (0 background, 1..C the
classes, 255 ignored) and its scores, the contour F-score (ICAM's boundary metric),
CAM-to-prediction thresholding and threshold sweeps. Pure functions: the class count
comes from the caller's dataset."""
import cv2
import numpy as np

IGNORE = 255
# Thresholds swept by every CAM evaluation (background score of the argmax).
SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
# The scalar scores of an evaluation at one threshold (what records and reports carry).
SCORES = ("threshold", "miou", "mprecision", "mrecall", "contour_f")
# Contour match tolerance, as a fraction of the image diagonal (DAVIS, ICAM).
CONTOUR_TOLERANCE = 0.008
# Rows of a contour count array (..., 5, n): per label id, summed over images.
CONTOUR_ROWS = ("pred_matched", "pred_total", "gt_matched", "gt_total", "present")


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


def _winners(maps, keys, thresholds):
    """What every threshold of a sweep predicts, from one pass over one image's CAMs
    (K,H,W of classes `keys`): per pixel the label id of the winning map (the first on a
    tie) and how many of the sorted thresholds lie strictly below its score (uint8); the
    prediction at the j-th smallest threshold is that label where j < the count and
    background elsewhere (cam_to_label's tie rule). Also the order sorting the thresholds.
    (uint8 counts for up to 255 thresholds, wider beyond.)"""
    # compare in float32 like cam_to_label, whatever the type of t (np.float64 included)
    t = np.asarray(thresholds, np.float64).astype(np.float32)
    order = np.argsort(t, kind="stable")
    maps = np.asarray(maps, np.float32)
    if len(maps) == 0:
        none = np.zeros(maps.shape[1:], np.uint8)
        return none, none, order
    label = (np.asarray(keys, np.int64) + 1).astype(np.uint8)[maps.argmax(0)]
    below = np.searchsorted(t[order], maps.max(0), side="left").astype(
        np.uint8 if len(t) < 256 else np.int64)
    return label, below, order


def _unsort(per_sorted, order):
    """Per-threshold results computed in sorted order, back in the order given."""
    res = np.empty_like(per_sorted)
    res[order] = per_sorted
    return res


def _confusions(label, below, order, gt, n):
    """sweep_confusions from _winners: each pixel's winner and count histogrammed, and the
    j-th matrix sums the pixels above the j-th threshold (their class) and below it
    (background)."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    keep = gt != IGNORE
    arg, below = label.ravel()[keep].astype(np.int64), below.ravel()[keep].astype(np.int64)
    t = len(order)
    hist = np.bincount((below * n + gt[keep]) * n + arg,
                       minlength=(t + 1) * n * n).reshape(t + 1, n, n)
    out = np.cumsum(hist[::-1], 0)[::-1][1:].copy()  # j-th: pixels with more than j below
    out[:, :, 0] += np.cumsum(hist.sum(2), 0)[:-1]   # the others are background
    return _unsort(out, order)


def sweep_confusions(maps, keys, gt, thresholds, n):
    """One n x n confusion matrix per background threshold, for one image (T, n, n).
    Same tie rule as cam_to_label: background wins when a map equals the threshold.
    One pass over the pixels whatever the number of thresholds."""
    return _confusions(*_winners(maps, keys, thresholds), gt, n)


def sweep_counts(maps, keys, gt, thresholds, n):
    """Everything a CAM evaluation sums over images, at every threshold, from one pass
    over one image's maps: (sweep_confusions, sweep_contour_counts)."""
    label, below, order = _winners(maps, keys, thresholds)
    conf = _confusions(label, below, order, gt, n)
    # the classes to score: the maps' and, from the matrix's rows, the ground truth's
    classes = {int(k) + 1 for k in keys} | {int(c) for c in np.flatnonzero(conf.sum((0, 2))) if c}
    return conf, _unsort(_contour_core(label, below, gt, len(order), n, classes), order)


def contour_radius(shape):
    """Contour match tolerance in pixels of an H x W image: ceil(0.008 x its diagonal),
    computed as DAVIS and ICAM do (VOC's 500 x 375: 5; the toy's 160 x 120: 2)."""
    return int(np.ceil(CONTOUR_TOLERANCE * np.linalg.norm(shape[:2])))


def _disk(r):
    """Offsets within Euclidean distance r (x^2 + y^2 <= r^2), as a (2r+1)^2 bool kernel."""
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def _block_range(k):
    """Min and max of each pixel's 2 x 2 block (itself, east, south, south-east) of a uint8
    map, the last row and column replicated outwards: there only the neighbour inside the
    image counts."""
    k = np.asarray(k, np.uint8)
    kw = dict(kernel=np.ones((2, 2), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return cv2.erode(k, **kw), cv2.dilate(k, **kw)


def boundary(mask):
    """One-pixel boundary of a binary mask by the seg2bmap rule (DAVIS, ICAM): a pixel
    whose value differs from its east, south or south-east neighbour (so the boundary
    lies half a pixel towards the origin, and the image's edge is never one)."""
    lo, hi = _block_range(np.asarray(mask, bool).view(np.uint8))
    return lo != hi


def _interval_counts(lo, hi, n_levels):
    """For each level j < n_levels, how many of the intervals [lo, hi) hold j."""
    d = np.bincount(lo, minlength=n_levels + 1) - np.bincount(hi, minlength=n_levels + 1)
    return np.cumsum(d)[:n_levels]


def _present(labels, n):
    """The label ids 1..n-1 found in a uint8 label map (255 is none)."""
    hist = cv2.calcHist([np.asarray(labels, np.uint8)], [0], None, [256], [0, 256]).ravel()
    return {int(c) for c in np.flatnonzero(hist[:n]) if c > 0}


def _contour_core(label, below, gt, n_levels, n, classes):
    """Contour counts (n_levels, 5, n) of one image whose prediction at level j is
    `label` where j < `below` and background elsewhere (uint8 maps), for the label ids
    `classes` (those in the prediction or the ground truth; the others score 0).
    A pixel is on class c's predicted boundary at level j iff j lies in [min, max) of
    k = below * (label == c) over its 2 x 2 block, so every level's boundary comes from
    one min/max pass; a ground-truth boundary pixel is matched at the levels held by some
    predicted boundary pixel within the radius (their level sets, as bits, OR-ed over the
    disk). Each class is scored in the box around its pixels (its boundary lies within
    one pixel of it): only the classes in the image, and their extent, cost anything."""
    if n_levels > 63:
        raise ValueError(f"at most 63 thresholds per contour sweep, got {n_levels}")
    gt = np.asarray(gt, np.uint8)
    h, w = gt.shape
    out = np.zeros((n_levels, len(CONTOUR_ROWS), n), np.int64)
    r = contour_radius(gt.shape)
    disk = _disk(r).view(np.uint8)
    dy, dx = np.nonzero(disk)
    levels = np.arange(n_levels)
    bit = np.left_shift(np.uint64(1), np.arange(n_levels + 1, dtype=np.uint64))
    fg = cv2.compare(below, 0, cv2.CMP_GT)  # 255 where some level predicts the winner
    for c in sorted(classes):
        # cv2 masks are 0 / 255; k is `below` where the prediction can be c, else 0
        g = cv2.compare(gt, c, cv2.CMP_EQ)
        pc = cv2.bitwise_and(cv2.compare(label, c, cv2.CMP_EQ), fg)
        x, y, bw, bh = cv2.boundingRect(cv2.bitwise_or(g, pc))
        if bw == 0:
            continue
        # one more row and column each side: the boundary's offset, then exact neighbours
        y0, x0, y1, x1 = max(y - 1, 0), max(x - 1, 0), min(y + bh + 1, h), min(x + bw + 1, w)
        k = cv2.bitwise_and(below[y0:y1, x0:x1], pc[y0:y1, x0:x1])
        out[:, 4, c] = (cv2.countNonZero(g) > 0) | (levels < int(k.max()))
        cw, pw = x1 - x0, x1 - x0 + 2 * r  # the box's width, and padded by r
        glo, ghi = _block_range(g[y0:y1, x0:x1])
        gb = glo != ghi
        gi = np.flatnonzero(gb)
        out[:, 3, c] = len(gi)
        lo, hi = _block_range(k)
        pi = np.flatnonzero(lo != hi)
        lo, hi = lo.ravel()[pi], hi.ravel()[pi]
        out[:, 1, c] = _interval_counts(lo, hi, n_levels)
        if not len(gi) or not len(pi):
            continue
        near = cv2.dilate(gb.view(np.uint8), disk).ravel()[pi].astype(bool)
        pi, lo, hi = pi[near], lo[near], hi[near]  # only these can match a GT pixel
        out[:, 0, c] = _interval_counts(lo, hi, n_levels)
        # the matched predicted boundary's level sets as bits (levels lo..hi-1), in a box
        # padded by r with zeros
        bits = np.zeros((y1 - y0 + 2 * r) * pw, np.uint64)
        bits[(pi // cw + r) * pw + pi % cw + r] = bit[hi] - bit[lo]
        window = (gi // cw) * pw + gi % cw  # each GT boundary pixel's disk, top-left
        hit = np.bitwise_or.reduce(bits[window[:, None] + dy * pw + dx], axis=1)
        out[:, 2, c] = ((hit[:, None] & bit[:n_levels]) != 0).sum(0)
    return out


def contour_counts(pred, gt, n):
    """Contour counts (5, n) of one label map against its ground truth (both H x W label
    ids; 255 is no class on either side), rows as CONTOUR_ROWS: for class c the binary
    masks pred == c and gt == c, their seg2bmap boundaries, and a boundary pixel matched
    when the other side's boundary lies within contour_radius. Sum over images, then
    contour_scores."""
    pred, gt = np.asarray(pred, np.uint8), np.asarray(gt, np.uint8)
    return _contour_core(pred, np.ones_like(pred), gt, 1, n, _present(pred, n) | _present(gt, n))[0]


def sweep_contour_counts(maps, keys, gt, thresholds, n):
    """Contour counts (T, 5, n) of one image's CAMs (K,H,W of classes `keys`) at every
    background threshold (at most 63), equal to contour_counts(cam_to_label(maps, keys,
    t), gt, n) for each t, in one pass whatever T."""
    label, below, order = _winners(maps, keys, thresholds)
    classes = {int(k) + 1 for k in keys} | _present(gt, n)
    return _unsort(_contour_core(label, below, gt, len(order), n, classes), order)


def contour_scores(counts):
    """Contour precision, recall and F per label id from (5, n) counts summed over the
    evaluated images, with the DAVIS boundary measure's edge cases on those sums: no
    predicted boundary gives precision 1, no ground-truth boundary recall 1 (so one side
    empty scores F 0, both empty F 1); F = 2PR / (P + R), 0 when P + R = 0. Background and
    classes absent from every prediction and ground truth have no score (None) and stay
    out of the mean `contour_f`."""
    pm, pt, gm, gt, present = np.asarray(counts, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pt > 0, pm / pt, 1.0)
        r = np.where(gt > 0, gm / gt, 1.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    valid = present > 0
    valid[0] = False  # background has no contour of its own
    p, r, f = (np.where(valid, v, np.nan) for v in (p, r, f))
    return {"contour_f": float(np.nanmean(f)) if valid.any() else float("nan"),
            "class_contour_precision": _listify(p), "class_contour_recall": _listify(r),
            "class_contour_f": _listify(f)}


def format_table(rows, columns=("miou", "mprecision", "mrecall", "contour_f", "threshold")):
    """A plain-text table: one line per (name, result dict) row, values as percentages."""
    head = f"{'':<20}" + "".join(f"{c:>12}" for c in columns)
    lines = [head]
    for name, r in rows:
        cells = "".join(f"{r[c]:>12.3f}" if c == "threshold" else f"{100 * r[c]:>12.1f}"
                        for c in columns)
        lines.append(f"{name:<20}" + cells)
    return "\n".join(lines)
