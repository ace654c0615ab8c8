"""IRN refinement: the sparse random walk against a dense walk built here from first
principles, transition columns, pair labels on a hand-made map, boundary-cut affinities,
CRF label range, and steps 20-23 end to end with resume."""
import json

import numpy as np
import pytest
import torch

import run_sample
from conftest import TINY
from misc.crf import confident_labels
from misc.imutils import read_label
from net.irn import offsets, pair_affinities, pair_labels, random_walk, transition_matrix


def dense_walk(cams, boundary, radius, beta, exp_times):
    """Dense reference: A[i, j] = (1 - max boundary on the segment i -> j)^beta for
    0 < |i - j| < radius (both directions), A[i, i] = 1; T = A / column sums;
    result = x T^(2^exp_times)."""
    c, h, w = cams.shape
    b = boundary.double().numpy()
    n = h * w
    a = np.eye(n)
    for y in range(h):
        for x in range(w):
            for dy in range(-radius + 1, radius):
                for dx in range(-radius + 1, radius):
                    if not 0 < dy * dy + dx * dx < radius * radius:
                        continue
                    ty, tx = y + dy, x + dx
                    if not (0 <= ty < h and 0 <= tx < w):
                        continue
                    # the pair's segment, walked from the endpoint of the half-plane offset
                    sy, sx, ey, ex = (y, x, dy, dx) if (dy > 0 or (dy == 0 and dx > 0)) \
                        else (ty, tx, -dy, -dx)
                    k = max(abs(ey), abs(ex))
                    pts = {(sy + round(ey * i / k), sx + round(ex * i / k)) for i in range(1, k + 1)}
                    a[y * w + x, ty * w + tx] = (1 - max(b[p] for p in pts)) ** beta
    t = a / a.sum(0, keepdims=True)
    for _ in range(exp_times):
        t = t @ t
    x0 = (cams.double().numpy() * (1 - b)[None]).reshape(c, n)
    return torch.from_numpy((x0 @ t).reshape(c, h, w))


@pytest.mark.parametrize("radius,exp_times", [(3, 3), (5, 4)])
def test_sparse_walk_equals_dense_walk(radius, exp_times):
    torch.manual_seed(0)
    boundary = torch.rand(9, 11) ** 3  # mostly low, a few high
    cams = torch.rand(3, 9, 11)
    got = random_walk(cams, boundary, radius, 10.0, exp_times)
    want = dense_walk(cams, boundary, radius, 10.0, exp_times)
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), atol=1e-4)


def test_transition_columns_sum_to_one():
    torch.manual_seed(1)
    t = transition_matrix(torch.rand(7, 8), radius=5, beta=10.0).to_dense().T  # T itself
    np.testing.assert_allclose(t.sum(0).numpy(), 1.0, atol=1e-5)
    assert (t >= 0).all() and (torch.diagonal(t) > 0).all()


def test_pair_labels_on_a_hand_made_map():
    label = torch.tensor([[[0, 0, 5],
                           [7, 255, 5]]])
    assert offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    bg, fg, neg = pair_labels(label, 2)

    def pairs(m):
        return {(offsets(2)[d], (y, x)) for d, y, x in zip(*np.nonzero(m[0].numpy()))}
    assert pairs(bg) == {((0, 1), (0, 0))}
    assert pairs(fg) == {((1, 0), (0, 2))}
    assert pairs(neg) == {((0, 1), (0, 1)), ((1, 0), (0, 0)), ((1, -1), (0, 1)), ((1, 1), (0, 1))}


def test_affinity_is_cut_by_a_boundary_between_the_pixels():
    b = torch.zeros(1, 5, 5)
    b[0, :, 2] = 1.0  # a vertical wall in column 2
    aff = pair_affinities(b, 3)
    right = offsets(3).index((0, 1))
    two_right = offsets(3).index((0, 2))
    assert aff[0, right, 0, 0] == 1  # (0,0)-(0,1): no wall between
    assert aff[0, two_right, 0, 0] == 0  # (0,0)-(0,2) ends on the wall
    assert aff[0, two_right, 0, 1] == 0  # (0,1)-(0,3) crosses it
    assert aff[0, right, 0, 3] == 1


def test_crf_keeps_label_ids_in_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    maps = rng.random((2, 30, 40)).astype(np.float32)
    out = confident_labels(img, maps, [4, 11], 0.3, 0.05)
    assert out.shape == (30, 40) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 5, 12, 255}




def test_steps_20_to_23_and_rerun(toy_root, tmp_path, capsys):
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY]
    run_sample.main(args + ["--steps", "1-6,14-23"])
    from voc12.dataloader import VOC
    voc = VOC(toy_root)
    labels = voc.labels(voc.ids("train"))
    for i, keys in labels.items():
        ir = read_label(tmp_path / "result" / "ir_label" / f"{i}.png")
        pm = read_label(tmp_path / "result" / "sem_seg" / f"{i}.png")
        assert ir.shape == pm.shape == voc.image(i).shape[:2]
        assert set(np.unique(ir)) <= {0, 255, *(np.asarray(keys) + 1)}
        assert set(np.unique(pm)) <= {0, *(np.asarray(keys) + 1)}
    with open(tmp_path / "result" / "eval" / "sem_seg.json") as f:
        r = json.load(f)
    assert r["name"] == "sem_seg" and r["fixed"] is None and r["best"]["threshold"] == 0.30
    with open(tmp_path / "result" / "eval" / "orandnet_cam.json") as f:  # before IRN: the
        assert json.load(f)["fixed"]["threshold"] == 0.25  # refined folder's own threshold
    capsys.readouterr()
    run_sample.main(args + ["--steps", "cam_to_ir_label,make_sem_seg_labels"])
    out = capsys.readouterr().out
    assert out.count("0 images written, 8 already done") == 2


def test_irn_steps_before_their_prerequisites(toy_root, tmp_path):
    from misc.errors import PipelineError
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY]
    with pytest.raises(PipelineError, match="run step cam_to_ir_label first"):
        run_sample.main(args + ["--steps", "train_irn"])
    with pytest.raises(PipelineError, match="run step train_irn first"):
        run_sample.main(args + ["--steps", "make_sem_seg_labels"])
    with pytest.raises(PipelineError, match="orandnet_cam.*CAM file missing"):
        run_sample.main(args + ["--steps", "cam_to_ir_label"])
