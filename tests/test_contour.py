"""The contour F-score (misc.metrics) against hand-computed boundaries: the seg2bmap rule,
the disk tolerance, DAVIS's edge cases, accumulation over images, and the one-pass sweep
against thresholding."""
import numpy as np
import pytest

from misc.metrics import (IGNORE, boundary, cam_to_label, contour_counts, contour_radius,
                          contour_scores, sweep_confusions, sweep_contour_counts, sweep_counts)

N = 21  # VOC's label ids


def _square(shape, rows, cols, c=1, base=None):
    m = np.zeros(shape, np.uint8) if base is None else base.copy()
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = c
    return m


def _prf(counts, c=1):
    s = contour_scores(counts)
    return s["class_contour_precision"][c], s["class_contour_recall"][c], s["class_contour_f"][c]


def test_radius_is_ceil_of_0008_diagonal():
    assert contour_radius((375, 500)) == 5  # VOC: diagonal 625, 5.0 exactly
    assert contour_radius((120, 160)) == 2  # the toy: 1.6
    assert contour_radius((480, 640)) == 7  # COCO: 6.4
    assert contour_radius((12, 12)) == 1


def test_boundary_by_the_seg2bmap_rule():
    # a pixel differing from its east, south or south-east neighbour; the edge is none
    m = np.zeros((4, 4), bool)
    m[2:, 2:] = True  # touches the bottom-right edge
    assert set(zip(*np.nonzero(boundary(m)))) == {(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)}
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True  # touches the top-left edge
    assert set(zip(*np.nonzero(boundary(m)))) == {(0, 1), (1, 0), (1, 1)}
    # a square [2, 5]^2: the ring of the box [1, 5]^2, 16 pixels
    ring = np.zeros((12, 12), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    assert np.array_equal(boundary(_square((12, 12), (2, 5), (2, 5))), ring)
    assert not boundary(np.ones((5, 6), bool)).any()  # a full image has no boundary


def test_shifted_square_by_hand():
    # 12 x 12: radius 1, a plus-shaped disk. Ground truth rings the box rows 1-5 x cols
    # 1-5; the square shifted right by 2 rings rows 1-5 x cols 3-7. Matched predicted
    # pixels: top and bottom rows at cols 3-6 (4 + 4), the left column at rows 2 and 4
    # (next to the top and bottom rows); the right column at col 7 is 2 away: 10 / 16
    gt = _square((12, 12), (2, 5), (2, 5))
    pred = _square((12, 12), (2, 5), (4, 7))
    c = contour_counts(pred, gt, N)
    assert c[:, 1].tolist() == [10, 16, 10, 16, 1]
    assert _prf(c) == pytest.approx((10 / 16, 10 / 16, 10 / 16))
    # a prediction wider to the right (cols 2-7, a 20-pixel ring): precision 15/20 (the
    # right column and the top/bottom ends at col 7 miss), recall 15/16 (the middle of
    # the ground truth's right column misses); F = 5/6
    wide = _square((12, 12), (2, 5), (2, 7))
    c = contour_counts(wide, gt, N)
    assert c[:4, 1].tolist() == [15, 20, 15, 16]
    assert _prf(c) == pytest.approx((3 / 4, 15 / 16, 5 / 6))
    # the ground truth's 255 is no class: a void band around the object changes nothing
    void = gt.copy()
    void[:8, :8][gt[:8, :8] == 0] = IGNORE  # the object's surroundings
    assert (void == IGNORE).any() and np.array_equal(contour_counts(wide, void, N), c)
    # nor is a 255 in the prediction
    assert np.array_equal(contour_counts(np.where(wide == 0, IGNORE, wide), gt, N), c)


def test_disk_tolerance_at_radius_two():
    # 120 x 160 (the toy): radius 2. One-pixel objects have a 2 x 2 boundary (the pixel
    # and its north, west, north-west neighbours). Shifted by (2, 1): three of the four
    # predicted pixels lie within 2 of the ground truth's (d^2 = 1, 2, 4), the fourth at
    # d^2 = 5 does not (a square kernel would match it, radius 1 only one pixel)
    gt = np.zeros((120, 160), np.uint8)
    pred = gt.copy()
    gt[50, 60] = 7
    pred[52, 61] = 7
    c = contour_counts(pred, gt, N)
    assert c[:4, 7].tolist() == [3, 4, 3, 4]
    assert _prf(c, 7) == pytest.approx((3 / 4, 3 / 4, 3 / 4))


def test_davis_edge_cases():
    gt = _square((12, 12), (2, 5), (2, 5), c=3)
    # an empty prediction: precision 1 (nothing wrong predicted), recall 0, F 0
    c = contour_counts(np.zeros_like(gt), gt, N)
    assert _prf(c, 3) == (1.0, 0.0, 0.0)
    # a class predicted where the ground truth has none: precision 0, recall 1, F 0
    c = contour_counts(gt, np.zeros_like(gt), N)
    assert _prf(c, 3) == (0.0, 1.0, 0.0)
    # both present but without boundaries (the class fills the image): P = R = F = 1
    full = np.full((12, 12), 3, np.uint8)
    c = contour_counts(full, full, N)
    assert c[:4, 3].tolist() == [0, 0, 0, 0] and c[4, 3] == 1
    assert _prf(c, 3) == (1.0, 1.0, 1.0)
    # boundaries on both sides that never meet: P = R = 0, F = 0 (not 0 / 0)
    far = _square((12, 12), (8, 10), (8, 10), c=3)
    assert _prf(contour_counts(far, gt, N), 3) == (0.0, 0.0, 0.0)


def test_absent_classes_have_no_score():
    gt = _square((12, 12), (2, 5), (2, 5), c=1)
    gt = _square((12, 12), (7, 9), (7, 9), c=2, base=gt)
    pred = _square((12, 12), (2, 5), (4, 7), c=1)  # class 2 missed: F 0
    s = contour_scores(contour_counts(pred, gt, N))
    assert s["class_contour_f"][0] is None  # background has no contour of its own
    assert s["class_contour_f"][1] == pytest.approx(10 / 16) and s["class_contour_f"][2] == 0
    assert all(v is None for v in s["class_contour_f"][3:])  # absent everywhere
    assert s["contour_f"] == pytest.approx((10 / 16 + 0) / 2)  # over classes 1 and 2 only
    empty = contour_scores(contour_counts(np.zeros((4, 4)), np.zeros((4, 4)), N))
    assert np.isnan(empty["contour_f"]) and set(empty["class_contour_f"]) == {None}


def test_counts_accumulate_over_images():
    # image A: a perfect 32-pixel contour; image B: the wide prediction (15/20, 15/16).
    # Summed counts: P = 47/52, R = 47/48, F = 94/100, not the mean of the images' F
    gt_a = _square((12, 12), (2, 9), (2, 9))
    a = contour_counts(gt_a, gt_a, N)
    assert _prf(a) == (1.0, 1.0, 1.0) and a[1, 1] == 32
    gt_b = _square((12, 12), (2, 5), (2, 5))
    b = contour_counts(_square((12, 12), (2, 5), (2, 7)), gt_b, N)
    p, r, f = _prf(a + b)
    assert (p, r, f) == pytest.approx((47 / 52, 47 / 48, 0.94))
    assert f != pytest.approx((1 + 5 / 6) / 2)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_sweep_equals_thresholding(k):
    rng = np.random.default_rng(k)
    h, w = 23, 31
    # smooth maps on a 0.05 grid: ties between maps and with the thresholds
    low = rng.random((k, 4, 5))
    maps = np.stack([np.kron(m, np.ones((6, 7)))[:h, :w] for m in low]) if k else \
        np.zeros((0, h, w))
    maps = (np.round(maps * 20) / 20).astype(np.float32)
    keys = np.sort(rng.choice(20, k, replace=False))
    gt = np.kron(rng.integers(0, N, (3, 4)), np.ones((8, 8), np.int64))[:h, :w].astype(np.uint8)
    for c, key in enumerate(keys):
        gt[maps[c] > .6] = key + 1
    gt[rng.random((h, w)) < .05] = IGNORE
    thresholds = [0.5, 0.05, 0.95, 0.3, 0.5, 0.25]  # any order, repeated
    got = sweep_contour_counts(maps, keys, gt, thresholds, N)
    expected = np.stack([contour_counts(cam_to_label(maps, keys, t), gt, N) for t in thresholds])
    assert got.shape == (6, 5, N) and np.array_equal(got, expected)
    if k:
        assert not np.array_equal(got[1], got[2])  # the threshold changes the contours
    conf, edges = sweep_counts(maps, keys, gt, thresholds, N)
    assert np.array_equal(edges, expected)
    assert np.array_equal(conf, sweep_confusions(maps, keys, gt, thresholds, N))
