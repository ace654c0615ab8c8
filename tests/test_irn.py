"""IRN refinement, each behaviour from its definition: the cells between two pixels
(hand-checked offsets, and the distance rule at radius 10), the training-pair source
region, labels at pixel 4i+2, the branch order of the boundary head, padding and
logit-space flip averaging at inference, the balanced loss on a constant boundary, the
sparse walk against a dense walk built here from the definition, a diagonal one-cell
wall that the walk must not cross; CRF label range; the IRN steps (cam_to_ir_label to
eval_sem_seg) end to end with resume."""
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import run_sample
from conftest import TINY
from misc.crf import confident_labels
from misc.imutils import read_label
from net.irn import (BoundaryNet, affinity_loss, boundary_map, offsets, pair_affinities,
                     pair_labels, path_cells, random_walk, source_region, stride4_labels,
                     transition_matrix)
from net.resnet_cam import CAMNet
from pipeline.config import PRESETS


def cells_between(p, q):
    """The definition: integer cells whose distance to the segment p-q is below one cell
    (both ends included), in exact arithmetic."""
    (py, px), (qy, qx) = p, q
    dy, dx = qy - py, qx - px
    n2 = dy * dy + dx * dx
    out = set()
    for y in range(min(py, qy) - 1, max(py, qy) + 2):
        for x in range(min(px, qx) - 1, max(px, qx) + 2):
            t = min(max(Fraction((y - py) * dy + (x - px) * dx, n2), 0), 1)  # closest point
            if (y - py - t * dy) ** 2 + (x - px - t * dx) ** 2 < 1:
                out.add((y, x))
    return out


def test_path_cells_of_a_few_offsets_by_hand():
    assert sorted(path_cells(0, 1)) == [(0, 0), (0, 1)]
    assert sorted(path_cells(0, 3)) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert sorted(path_cells(1, 2)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert sorted(path_cells(1, 1)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(path_cells(1, -1)) == [(0, -1), (0, 0), (1, -1), (1, 0)]
    # (2,3): |2x - 3y| < sqrt(13) -> 2 cells in row 0, 4 in row 1, 2 in row 2
    assert sorted(path_cells(2, 3)) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3),
                                        (2, 2), (2, 3)]
    assert len(path_cells(3, 1)) == 8  # the whole 4 x 2 box
    assert sorted(path_cells(1, 2, "line")) == [(0, 1), (1, 2)]  # the project's old thin line


def test_path_cells_follow_the_distance_rule_at_radius_10():
    for dy, dx in offsets(10):
        assert set(path_cells(dy, dx)) == cells_between((0, 0), (dy, dx)), (dy, dx)


@pytest.mark.parametrize("radius,rows,cols", [(10, (0, 22), (9, 30)), (5, (0, 27), (4, 35))])
def test_source_region(radius, rows, cols):
    """IRN's pair sources on a 32 x 40 map: rows 0..h-f-1, columns f..w-f-1, f = radius-1,
    i.e. the pixels whose partners at every offset are inside the map."""
    region = source_region(32, 40, radius)
    ys, xs = torch.nonzero(region, as_tuple=True)
    assert (ys.min().item(), ys.max().item()) == rows and (xs.min().item(), xs.max().item()) == cols
    assert region.sum() == (rows[1] + 1) * (cols[1] - cols[0] + 1)
    inside = {(y, x) for y in range(32) for x in range(40)
              if all(0 <= y + dy < 32 and 0 <= x + dx < 40 for dy, dx in offsets(radius))}
    assert inside == {(y, x) for y, x in zip(ys.tolist(), xs.tolist())}
    # only those pixels give pairs; 'all' takes every pixel whose partner is inside
    label = torch.zeros(1, 32, 40, dtype=torch.long)
    bg = pair_labels(label, radius, "reference")[0][0].any(0)
    assert torch.equal(bg, region)
    bg_all = pair_labels(label, radius, "all")[0][0]
    assert bg_all[offsets(radius).index((0, 1)), 31, 0] and not region[31, 0]


def test_training_labels_are_sampled_at_4i_plus_2():
    yy, xx = np.mgrid[:64, :64]
    phase = (yy % 4) * 4 + xx % 4  # position inside each 4 x 4 cell
    assert (stride4_labels(torch.from_numpy(phase)) == 2 * 4 + 2).all()  # row 4i+2, column 4j+2
    label = np.random.default_rng(0).integers(0, 21, (64, 64)).astype(np.uint8)
    out = stride4_labels(torch.from_numpy(label)).numpy()
    assert out.shape == (16, 16)
    assert all(out[i, j] == label[4 * i + 2, 4 * j + 2] for i in range(16) for j in range(16))
    # what the reference's PIL nearest-neighbour shrink to 1/4 gives
    assert np.array_equal(out, np.asarray(Image.fromarray(label).resize((16, 16), Image.NEAREST)))


def test_boundary_head_upsamples_before_relu_and_crops():
    torch.manual_seed(0)
    net = BoundaryNet(CAMNet(3, "resnet18", "none")).eval()
    kinds = [[type(m).__name__ for m in b] for b in net.branches]
    assert kinds[:2] == [["Conv2d", "GroupNorm", "ReLU"]] * 2  # stride 4 already
    assert kinds[2:] == [["Conv2d", "GroupNorm", "Upsample", "ReLU"]] * 3
    assert [b[2].scale_factor for b in net.branches[2:]] == [2.0, 4.0, 4.0]
    x = torch.randn(1, 3, 36, 52)  # stride 4: 9 x 13; stride 16: 3 x 4 -> x4 = 12 x 16
    with torch.no_grad():
        f = net.trunk.stem(x)
        for s in net.trunk.stages:
            f = s(f)
        b = net.branches[4]
        up = F.interpolate(b[1](b[0](f)), scale_factor=4, mode="bilinear", align_corners=False)
        want = F.relu(up)[..., :9, :13]  # cropped top-left, not resized
        got = b(f)[..., :9, :13]
        assert net(x).shape == (1, 1, 9, 13)
    assert torch.allclose(got, want, atol=1e-6)


class _Recorder(nn.Module):
    """A stand-in boundary net: logit 4 for the image, 0 for its flip, on the stride-4
    grid of its (padded) input, which it keeps."""

    def forward(self, x):
        self.seen = x.clone()
        h4, w4 = (x.shape[2] - 1) // 4 + 1, (x.shape[3] - 1) // 4 + 1
        out = torch.zeros(x.shape[0], 1, h4, w4)
        out[0] = 4.0
        return out


def test_boundary_map_averages_the_flip_in_logit_space():
    net = _Recorder()
    e = boundary_map(net, torch.randn(3, 30, 41), pad=0)
    assert e.shape == (8, 11)
    # sigmoid((4 + 0) / 2) = 0.881, not the mean of sigmoids (0.982 + 0.5) / 2 = 0.741
    assert torch.allclose(e, torch.full((8, 11), 1 / (1 + np.exp(-2.0))), atol=1e-6)


def test_boundary_map_pads_the_image_and_its_flip():
    net = _Recorder()
    img = torch.randn(3, 30, 41)
    boundary_map(net, img, pad=64)
    x = net.seen
    assert x.shape == (2, 3, 64, 64)
    assert torch.equal(x[0, :, :30, :41], img) and torch.equal(x[1, :, :30, :41], img.flip(-1))
    assert (x[:, :, 30:] == 0).all() and (x[:, :, :, 41:] == 0).all()  # zeros right and below
    boundary_map(net, img, pad=32)  # an image larger than the pad is padded, never cropped
    assert net.seen.shape == (2, 3, 32, 41)


def test_affinity_loss_balances_its_three_terms():
    """On a constant boundary b every pair's affinity is 1 - b, so the loss is
    (-log(1-b)/2 + -log(1-b)/2 + -log(b)) / 2 whatever the pair counts."""
    label = torch.zeros(1, 12, 12, dtype=torch.long)
    label[0, :, 6:] = 3
    label[0, :2, :2] = 255
    b = 0.2
    logits = torch.full((1, 1, 12, 12), float(np.log(b / (1 - b))))
    want = (-np.log(1 - b + 1e-5) - np.log(b + 1e-5)) / 2
    assert abs(affinity_loss(logits, label, 3).item() - want) < 1e-5


def dense_walk(cams, boundary, radius, beta, exp_times):
    """Dense reference from the definition: A[p, q] = (1 - max boundary over
    cells_between(p, q))^beta for 0 < |p - q| < radius, A[p, p] = 1; T = A / column sums;
    result = x T^(2^exp_times) with x = cams * (1 - boundary)."""
    c, h, w = cams.shape
    b = boundary.double().numpy()
    n = h * w
    a = np.eye(n)
    rel = {}  # cells_between depends on the offset only: computed once per offset
    for y in range(h):
        for x in range(w):
            for dy in range(-radius + 1, radius):
                for dx in range(-radius + 1, radius):
                    ty, tx = y + dy, x + dx
                    if not 0 < dy * dy + dx * dx < radius * radius or not (0 <= ty < h and 0 <= tx < w):
                        continue
                    cells = rel.setdefault((dy, dx), cells_between((0, 0), (dy, dx)))
                    a[y * w + x, ty * w + tx] = (1 - max(b[y + cy, x + cx] for cy, cx in cells)) ** beta
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


def test_walk_does_not_cross_a_one_cell_diagonal_boundary():
    """30 x 40 grid, boundary 1 on the cells x - y = 10, the class map 1 left of it: less
    than 1 % of the walked mass may end right of it. The thin line of the project's old
    cells lets it slip through between two diagonal wall cells."""
    yy, xx = np.mgrid[:30, :40]
    wall = torch.from_numpy((xx - yy == 10).astype(np.float32))
    cam = torch.from_numpy((xx - yy < 10).astype(np.float32))[None]
    right = torch.from_numpy(xx - yy > 10)

    def leak(cells):
        rw = random_walk(cam, wall, 5, 10.0, 8, cells)[0]
        return (rw[right].sum() / rw.sum()).item()
    assert leak("box") < 0.01
    assert leak("line") > 0.1


def test_transition_columns_sum_to_one():
    torch.manual_seed(1)
    t = transition_matrix(torch.rand(7, 8), radius=5, beta=10.0).to_dense().T  # T itself
    np.testing.assert_allclose(t.sum(0).numpy(), 1.0, atol=1e-5)
    assert (t >= 0).all() and (torch.diagonal(t) > 0).all()


def test_pair_labels_on_a_hand_made_map():
    label = torch.tensor([[[0, 0, 5],
                           [7, 255, 5]]])
    assert offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    bg, fg, neg = pair_labels(label, 2, "all")

    def pairs(m):
        return {(offsets(2)[d], (y, x)) for d, y, x in zip(*np.nonzero(m[0].numpy()))}
    assert pairs(bg) == {((0, 1), (0, 0))}
    assert pairs(fg) == {((1, 0), (0, 2))}
    assert pairs(neg) == {((0, 1), (0, 1)), ((1, 0), (0, 0)), ((1, -1), (0, 1)), ((1, 1), (0, 1))}
    # IRN's sources at radius 2 on a 2 x 3 map: row 0, column 1 only
    bg, fg, neg = pair_labels(label, 2, "reference")
    assert not pairs(bg) and not pairs(fg)
    assert pairs(neg) == {((0, 1), (0, 1)), ((1, -1), (0, 1)), ((1, 1), (0, 1))}


@pytest.mark.parametrize("cells", ["box", "line"])
def test_pair_affinities_equal_one_minus_the_largest_boundary_on_the_path(cells):
    torch.manual_seed(0)
    b = torch.rand(2, 6, 9, requires_grad=True)
    aff = pair_affinities(b, 4, cells)
    want = torch.zeros_like(aff)
    for d, (dy, dx) in enumerate(offsets(4)):
        for i in range(6):
            for j in range(9):
                vals = [b[:, i + cy, j + cx] if 0 <= i + cy < 6 and 0 <= j + cx < 9
                        else torch.ones(2) for cy, cx in path_cells(dy, dx, cells)]
                want[:, d, i, j] = 1 - torch.stack(vals, 1).max(1).values
    assert torch.equal(aff, want.detach())
    # each affinity whose path lies inside the map sends -1 to its one highest cell (random
    # values below 1: no ties; a path leaving the map is capped by the padding's 1)
    aff.sum().backward()
    assert b.grad.sum().item() == -float((want > 0).sum())
    assert set(b.grad.unique().tolist()) <= {-float(k) for k in range(len(offsets(4)) * 9)}


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
    assert aff[0, right, 0, 2] == 0  # (0,2)-(0,3) starts on it: both ends count
    assert pair_affinities(b, 3, "line")[0, right, 0, 2] == 1  # the old line skipped the start
    assert aff[0, right, 0, 4] == 0  # partner outside the map


def test_crf_keeps_label_ids_in_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    maps = rng.random((2, 30, 40)).astype(np.float32)
    out = confident_labels(img, maps, [4, 11], 0.3, 0.05)
    assert out.shape == (30, 40) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 5, 12, 255}




def test_steps_20_to_23_and_rerun(toy_root, tmp_path, capsys):
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY]
    run_sample.main(args + ["--steps", "1-6,import_cams-eval_sem_seg"])
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
    assert r["name"] == "sem_seg" and r["fixed"] is None
    assert r["best"]["threshold"] == PRESETS["toy"]["sem_seg_bg_thres"]
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
