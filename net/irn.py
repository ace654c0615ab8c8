"""IRN's class-boundary branch (Ahn et al., CVPR 2019) on a frozen ResNet trunk, the
inter-pixel affinities it implies, the pair labels and balanced losses that train it,
and the random walk that propagates CAMs with those affinities, as a sparse operator."""
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.weights import load_weights
from net.resnet_cam import CAMNet, trained_cam_net


class BoundaryNet(nn.Module):
    """Frozen trunk (a CAMNet's stem + 4 stages) -> 1x1 conv + GroupNorm + ReLU on five
    feature maps (stem, layer1..4), upsampled to stride 4, concatenated, 1x1 conv ->
    boundary probability at stride 4."""

    def __init__(self, trunk, width=32):
        super().__init__()
        self.trunk = trunk
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        chans = [trunk.stem[0].out_channels] + [_out_channels(s) for s in trunk.stages]
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width),
                          nn.ReLU(inplace=True)) for c in chans)
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
        size = feats[1].shape[2:]  # layer1: stride 4
        outs = [F.interpolate(b(f.detach()), size, mode="bilinear", align_corners=False)
                for b, f in zip(self.branches, feats)]
        return self.fuse(torch.cat(outs, 1))

    def param_groups(self):
        return list(self.branches.parameters()) + list(self.fuse.parameters())


def _out_channels(stage):
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    last = stage[-1]
    # torchvision/timm blocks end with conv3 (Bottleneck) or conv2 (BasicBlock)
    return getattr(last, "conv3", getattr(last, "conv2", convs[-1])).out_channels


def offsets(radius):
    """Pair offsets (dy, dx) with 0 < |d| < radius in one half-plane (each pair once)."""
    return [(dy, dx) for dy in range(0, radius) for dx in range(-radius + 1, radius)
            if 0 < dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)]


def path(dy, dx):
    """Grid points on the segment from (0,0) to (dy,dx), excluding the start."""
    n = max(abs(dy), abs(dx))
    return sorted({(round(dy * k / n), round(dx * k / n)) for k in range(1, n + 1)})


def _shift(x, dy, dx, fill):
    """x[..., i + dy, j + dx] aligned at (i, j), `fill` outside the image."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def pair_affinities(boundary, radius):
    """Affinity of each pixel with its partner at every offset: 1 - max boundary on the
    segment between them. boundary (B,h,w) -> (B, D, h, w); partners outside the image
    get affinity 0 (and no label: see pair_labels)."""
    return torch.stack([1 - torch.stack([_shift(boundary, py, px, 1.0) for py, px in path(dy, dx)])
                        .amax(0) for dy, dx in offsets(radius)], 1)


def pair_labels(label, radius):
    """From a stride-4 label map (B,h,w; 255 = unsure) to three (B, D, h, w) masks over the
    pairs of offsets(radius): background-positive (both 0), foreground-positive (same
    class > 0) and negative (different confident labels)."""
    label = label.long()
    to = torch.stack([_shift(label, dy, dx, 255) for dy, dx in offsets(radius)], 1)
    fr = label[:, None].expand_as(to)
    known = (fr != 255) & (to != 255)
    bg_pos = known & (fr == 0) & (to == 0)
    fg_pos = known & (fr == to) & (fr > 0)
    return bg_pos, fg_pos, known & (fr != to)


def affinity_loss(logits, label, radius):
    """IRN's balanced affinity loss: (bg_pos/2 + fg_pos/2 + neg) / 2, each term the mean
    -log of (1 - affinity for negatives) over its pairs."""
    aff = pair_affinities(torch.sigmoid(logits[:, 0].float()), radius)
    bg, fg, neg = pair_labels(label, radius)
    mean = lambda v, m: (v * m).sum() / (m.sum() + 1e-5)  # noqa: E731
    pos = mean(-torch.log(aff + 1e-5), bg) / 2 + mean(-torch.log(aff + 1e-5), fg) / 2
    return (pos + mean(-torch.log(1 + 1e-5 - aff), neg)) / 2


def transition_matrix(boundary, radius=5, beta=10.0):
    """Sparse column-normalised transition T (N x N, N = h*w) of the random walk, returned
    transposed (T^T, sparse CSR) so that a step is T^T @ x. Affinities within `radius` in both
    directions plus 1 on the diagonal, raised to the power beta."""
    h, w = boundary.shape
    idx = torch.arange(h * w, device=boundary.device).view(h, w)
    aff = pair_affinities(boundary[None].float(), radius)[0]  # (D,h,w)
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


def random_walk(cams, boundary, radius=5, beta=10.0, exp_times=8):
    """Propagate CAMs (C,h,w) along affinities: x <- x T applied 2**exp_times times to
    cams * (1 - boundary); equal to multiplying by the dense T^(2^exp_times) without
    ever building it."""
    c, h, w = cams.shape
    tt = transition_matrix(boundary, radius, beta)
    x = (cams * (1 - boundary)[None]).reshape(c, h * w).T.contiguous().float()
    for _ in range(2 ** exp_times):
        x = tt @ x
    return x.T.reshape(c, h, w)


def weights_meta(trunk, backbone, radius, n_classes):
    """What identifies the boundary net's saved weights (checked when loading them); its
    trunk is a CAMNet, whose unused classifier has n_classes outputs."""
    return {"step": "train_irn", "arch": "BoundaryNet", "trunk": trunk, "backbone": backbone,
            "radius": radius, "n_classes": n_classes}


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
