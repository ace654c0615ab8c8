"""IRN's class-boundary branch (Ahn et al., CVPR 2019) on a frozen ResNet trunk, the
inter-pixel affinities it implies, the pair labels and balanced losses that train it,
and the random walk that propagates CAMs with those affinities, as a sparse operator."""
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.torchutils import autocast
from misc.weights import load_weights
from net.resnet_cam import CAMNet, trained_cam_net


PATH_CELLS = ("box", "line")
PAIR_REGIONS = ("reference", "all")


class BoundaryNet(nn.Module):
    """Frozen trunk (a CAMNet's stem + 4 stages) -> per feature map (stem, layer1..4) IRN's
    branch: 1x1 conv -> GroupNorm -> bilinear upsampling by the map's stride / 4 -> ReLU,
    cropped top-left to the stride-4 size; concatenated; 1x1 conv -> boundary logit."""

    def __init__(self, trunk, width=32):
        super().__init__()
        self.trunk = trunk
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        chans = [trunk.stem[0].out_channels] + [_out_channels(s) for s in trunk.stages]
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width),
                          *([nn.Upsample(scale_factor=f, mode="bilinear", align_corners=False)]
                            if f > 1 else []),
                          nn.ReLU(inplace=True))
            for c, f in zip(chans, _upsampling(trunk)))
        self.fuse = nn.Conv2d(5 * width, 1, 1)

    def train(self, mode=True):
        super().train(mode)
        self.trunk.eval()  # frozen: batch-norm statistics never move
        return self

    def forward(self, x):
        """Boundary logits (B,1,ceil(H/4),ceil(W/4)); the sigmoid is the boundary map."""
        with torch.no_grad():
            feats = [self.trunk.stem(x)]
            for s in self.trunk.stages:
                feats.append(s(feats[-1]))
        h, w = feats[1].shape[2:]  # layer1: stride 4
        # IRN upsamples by a fixed factor and crops, so a stride-16 cell stays where it was
        outs = [b(f.detach())[..., :h, :w] for b, f in zip(self.branches, feats)]
        return self.fuse(torch.cat(outs, 1))

    def param_groups(self):
        return list(self.branches.parameters()) + list(self.fuse.parameters())


def _out_channels(stage):
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    last = stage[-1]
    # torchvision/timm blocks end with conv3 (Bottleneck) or conv2 (BasicBlock)
    return getattr(last, "conv3", getattr(last, "conv2", convs[-1])).out_channels


@torch.no_grad()
def _upsampling(trunk):
    """Per feature map (stem, stages) the factor that brings it to stride 4, found on a
    64 x 64 probe (1, 1, 2, 4, 4 for IRN's strides 4, 4, 8, 16, 16)."""
    was = trunk.training
    trunk.eval()  # the probe must not move batch-norm statistics
    p = next(trunk.parameters())
    f = trunk.stem(torch.zeros(1, 3, 64, 64, device=p.device, dtype=p.dtype))
    sizes = [f.shape[-1]]
    for s in trunk.stages:
        f = s(f)
        sizes.append(f.shape[-1])
    trunk.train(was)
    return [sizes[1] // s for s in sizes]


@torch.no_grad()
def boundary_map(model, img, pad=512):
    """Boundary probabilities (ceil(H/4), ceil(W/4)) of one normalised image (3,H,W), as
    IRN infers them: the image and its flip, zero-padded right and bottom to pad x pad
    (GroupNorm statistics and the borders see the padding; 0 = none; a larger image is
    not cropped), through the net, cropped to the image's cells; the flip's logits are
    flipped back and the two averaged in logit space, then the sigmoid."""
    hh, ww = img.shape[1:]
    h4, w4 = (hh - 1) // 4 + 1, (ww - 1) // 4 + 1
    x = F.pad(torch.stack([img, img.flip(-1)]), (0, max(0, pad - ww), 0, max(0, pad - hh)))
    with autocast(img.device):
        e = model(x).float()[:, 0, :h4, :w4]
    return torch.sigmoid(e[0] / 2 + e[1].flip(-1) / 2)


def offsets(radius):
    """Pair offsets (dy, dx) with 0 < |d| < radius in one half-plane (each pair once)."""
    return [(dy, dx) for dy in range(0, radius) for dx in range(-radius + 1, radius)
            if 0 < dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)]


def path_cells(dy, dx, kind="box"):
    """Cells, relative to the source pixel, whose boundary values cut the pair (0,0)-(dy,dx).
    box (IRN's): every cell of the pair's bounding box whose distance to the line joining
    the two is below one cell, both ends included ((1, 2) -> 6 cells); line: the rounded
    grid points of the segment, start excluded ((1, 2) -> 2 cells), which lets a walk slip
    diagonally through a one-cell-wide boundary."""
    if kind == "line":
        n = max(abs(dy), abs(dx))
        return sorted({(round(dy * k / n), round(dx * k / n)) for k in range(1, n + 1)})
    if kind != "box":
        raise ValueError(f"path cells '{kind}': expected one of {PATH_CELLS}")
    n2 = dy * dy + dx * dx  # squared distance to the line = (dy*x - dx*y)^2 / n2, kept exact
    return [(y, x) for y in range(min(0, dy), max(0, dy) + 1)
            for x in range(min(0, dx), max(0, dx) + 1) if (dy * x - dx * y) ** 2 < n2]


def source_region(h, w, radius):
    """IRN's training-pair sources on an h x w map: rows 0..h-f-1 and columns f..w-f-1 with
    f = radius - 1, the same pixels for every offset (those whose partners all lie inside).
    (h, w) bool."""
    f = radius - 1
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:max(0, h - f), f:max(f, w - f)] = True
    return m


def _shift(x, dy, dx, fill):
    """x[..., i + dy, j + dx] aligned at (i, j), `fill` outside the image."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def pair_affinities(boundary, radius, cells="box"):
    """Affinity of each pixel with its partner at every offset: 1 - the largest boundary on
    path_cells(offset, cells). boundary (B,h,w) -> (B, D, h, w); cells outside the image
    count as boundary 1 (affinity 0; such pairs get no label: see pair_labels). The
    maximum's gradient goes to one cell, as IRN's max-pooling sends it."""
    b, h, w = boundary.shape
    m = radius - 1  # offsets reach m rows down and m columns either way
    pad = F.pad(boundary, (m, m, 0, m), value=1.0)
    paths = [path_cells(dy, dx, cells) for dy, dx in offsets(radius)]
    used = sorted({c for p in paths for c in p})
    slot = {c: i for i, c in enumerate(used)}
    # every shift any path needs, once: (B, C, h, w)
    shifted = torch.stack([pad[:, cy:cy + h, m + cx:m + cx + w] for cy, cx in used], 1)
    by_len = {}
    for d, p in enumerate(paths):  # paths of one length share one gather, as in IRN
        by_len.setdefault(len(p), []).append(d)
    tops, order = [], []
    for n, ds in by_len.items():
        idx = torch.tensor([slot[c] for d in ds for c in paths[d]], device=boundary.device)
        tops.append(shifted.index_select(1, idx).view(b, len(ds), n, h, w).max(2).values)
        order += ds
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))  # to offsets(radius) order
    return 1 - torch.cat(tops, 1).index_select(1, back.to(boundary.device))


def stride4_labels(label):
    """Training labels on the boundary map's grid as IRN shrinks them (PIL nearest to 1/4,
    which samples each 4 x 4 cell at its pixel 4i+2). label (..., H, W), H and W multiples
    of 4."""
    return label[..., 2::4, 2::4]


def pair_labels(label, radius, region="reference"):
    """From a stride-4 label map (B,h,w; 255 = unsure) to three (B, D, h, w) masks over the
    pairs of offsets(radius): background-positive (both 0), foreground-positive (same
    class > 0) and negative (different confident labels). region: 'reference' keeps IRN's
    sources only (source_region), 'all' every pixel whose partner is inside the map."""
    label = label.long()
    to = torch.stack([_shift(label, dy, dx, 255) for dy, dx in offsets(radius)], 1)
    fr = label[:, None].expand_as(to)
    known = (fr != 255) & (to != 255)
    if region == "reference":
        known = known & source_region(*label.shape[-2:], radius).to(label.device)
    elif region != "all":
        raise ValueError(f"pair region '{region}': expected one of {PAIR_REGIONS}")
    bg_pos = known & (fr == 0) & (to == 0)
    fg_pos = known & (fr == to) & (fr > 0)
    return bg_pos, fg_pos, known & (fr != to)


def affinity_loss(logits, label, radius, cells="box", region="reference"):
    """IRN's balanced affinity loss: (bg_pos/2 + fg_pos/2 + neg) / 2, each term the mean
    -log of (1 - affinity for negatives) over its pairs. label: on the logits' grid."""
    aff = pair_affinities(torch.sigmoid(logits[:, 0].float()), radius, cells)
    bg, fg, neg = pair_labels(label, radius, region)
    mean = lambda v, m: (v * m).sum() / (m.sum() + 1e-5)  # noqa: E731
    pos = mean(-torch.log(aff + 1e-5), bg) / 2 + mean(-torch.log(aff + 1e-5), fg) / 2
    return (pos + mean(-torch.log(1 + 1e-5 - aff), neg)) / 2


def transition_matrix(boundary, radius=5, beta=10.0, cells="box"):
    """Sparse column-normalised transition T (N x N, N = h*w) of the random walk, returned
    transposed (T^T, sparse CSR) so that a step is T^T @ x. Affinities within `radius` in both
    directions plus 1 on the diagonal, raised to the power beta."""
    h, w = boundary.shape
    idx = torch.arange(h * w, device=boundary.device).view(h, w)
    aff = pair_affinities(boundary[None].float(), radius, cells)[0]  # (D,h,w)
    rows, cols, vals = [idx.flatten()], [idx.flatten()], [torch.ones(h * w, device=boundary.device)]
    for d, (dy, dx) in enumerate(offsets(radius)):
        valid = _shift(torch.ones(h, w, device=boundary.device), dy, dx, 0.0) > 0
        a, b = idx[valid], _shift(idx, dy, dx, -1)[valid]
        v = aff[d][valid] ** beta
        rows += [a, b]
        cols += [b, a]
        vals += [v, v]
    rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    col_sum = torch.zeros(h * w, device=boundary.device).index_add_(0, cols, vals)
    # T[i, j] = A[i, j] / sum_i A[i, j]; store T^T: entry (j, i)
    t = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals / col_sum[cols], (h * w, h * w),
                                check_invariants=False).coalesce()
    with warnings.catch_warnings():  # CSR is "beta" in torch, and 16x faster here than COO
        warnings.simplefilter("ignore", UserWarning)
        return t.to_sparse_csr()


def random_walk(cams, boundary, radius=5, beta=10.0, exp_times=8, cells="box"):
    """Propagate CAMs (C,h,w) along affinities: x <- x T applied 2**exp_times times to
    cams * (1 - boundary); equal to multiplying by the dense T^(2^exp_times) without
    ever building it."""
    c, h, w = cams.shape
    tt = transition_matrix(boundary, radius, beta, cells)
    x = (cams * (1 - boundary)[None]).reshape(c, h * w).T.contiguous().float()
    for _ in range(2 ** exp_times):
        x = tt @ x
    return x.T.reshape(c, h, w)


def weights_meta(trunk, backbone, radius, n_classes):
    """What identifies the boundary net's saved weights (checked when loading them); its
    trunk is a CAMNet, whose unused classifier has n_classes outputs."""
    # head: IRN's branch order (conv, GroupNorm, upsample, ReLU, crop); older files had
    # the ReLU before a resize and are refused
    return {"step": "train_irn", "arch": "BoundaryNet", "head": "gn_up_relu_crop",
            "trunk": trunk, "backbone": backbone, "radius": radius, "n_classes": n_classes}


def trunk_backbone(kind, cam_backbone, irn_backbone):
    """The backbone name of the trunk: the CAM classifier's for kind 'cam'."""
    return cam_backbone if kind == "cam" else irn_backbone


def make_trunk(kind, backbone, n_classes, cam_weights=None):
    """The frozen trunk of the boundary net: a CAMNet's stem + stages. kind: 'cam' (the
    trained CAM classifier's trunk, sess/cam.pth: the toy's choice, as no ImageNet weights
    exist offline), or imagenet / none / a weights file for `backbone` (the paper's
    ImageNet ResNet-50). n_classes only shapes the unused classifier of the CAMNet."""
    if kind == "cam" and cam_weights:
        return trained_cam_net(backbone, n_classes, cam_weights)
    return CAMNet(n_classes, backbone, "none" if kind == "cam" else kind, freeze_bn=True,
                  freeze_stem=True)


def trained_boundary_net(kind, backbone, radius, n_classes, path):
    """The boundary net with its trained weights (sess/irn.pth); the trunk's weights come
    from that file too, whatever made them."""
    model = BoundaryNet(CAMNet(n_classes, backbone, "none", freeze_bn=True, freeze_stem=True))
    return load_weights(model, path, weights_meta(kind, backbone, radius, n_classes))
