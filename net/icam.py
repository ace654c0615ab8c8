"""ICAM, importance-sampling CAMs (Jonnarth, Felsberg & Zhang, arXiv 2203.12459, 2022;
reference: arvijj/icam), its two contributions on this project's ResNet trunk (the
reference builds on SEAM's ResNet-38, whose ImageNet weights exist only for MXNet, with
SEAM's pixel-correlation module and two-view equivariance losses, none of which is here:
docs/FIDELITY.md, "ICAM").

- Head: Dropout2d(0.5) and a bias-free 1x1 conv to background + classes; the CAMs are
  the per-pixel softmax over those C + 1 channels.
- Classification loss: 0.2 x the multilabel soft margin of the GAP'd logits (foreground
  channels) + 0.8 x that of importance-sampled pixels: per image and channel, 100 pixels
  drawn with probability proportional to the channel's softmax map, their values turned
  into logits by log(y(1-eps)+eps) - log(1-y(1-eps)).
- Feature-similarity loss (weight 0.5): -sum over pixel pairs of a Gaussian of their
  distance x ||y_i - y_j||^2 x tanh(mu + logit(mean |RGB_i - RGB_j|)): similar colours
  pull the softmax vectors together, different ones push them apart.
- CAMs: scales with flips, softmax conditioned on the image's labels, winner-take-all
  per pixel over the classes, each class over its own max; foreground where the winner
  exceeds 0.5."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.cam_io import normalize_max, to_cam_sizes
from misc.imutils import IMAGENET_MEAN, IMAGENET_STD
from misc.weights import load_weights
from net.resnet_cam import CAMNet, copy_cam_trunk


class ICAM(CAMNet):
    """CAMNet's trunk (state-dict keys shared, so a trained CAM classifier's trunk loads
    as is) with a C + 1-channel head. As the reference freezes ResNet-38's batch norm
    (statistics and affine parameters), its first convolution and its first residual
    stage, here every batch norm, the stem and layer1 are frozen."""

    def __init__(self, n_classes, backbone="resnet50", pretrained="none", dropout=0.5,
                 head_bias=False):
        super().__init__(n_classes, backbone, pretrained, freeze_bn=True, freeze_stem=True)
        # bias-free as the reference's fc8; head_bias lets a channel fire where the
        # features are weak (a learned background score)
        self.classifier = nn.Conv2d(self.classifier.in_channels, n_classes + 1, 1,
                                    bias=head_bias)
        nn.init.xavier_uniform_(self.classifier.weight)  # the reference's fc8 init
        if head_bias:
            nn.init.zeros_(self.classifier.bias)
        self.dropout = nn.Dropout2d(dropout)
        for m in [self.stages[0]] + [m for m in self.modules()
                                     if isinstance(m, nn.modules.batchnorm._BatchNorm)]:
            for p in m.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        """Logits (B, 1 + n_classes, H/16, W/16), background first."""
        return self.classifier(self.dropout(self.features(x)))

    def cams(self, x):
        raise NotImplementedError("ICAM's maps are label-conditioned softmaxes: use icam_cams")


def probs_to_logits(y, eps=1e-3):
    """ICAM's logits of probabilities: log(y(1-eps)+eps) - log(1-y(1-eps)), finite at 0
    and 1 (its sigmoid is (y(1-eps)+eps)/(1+eps))."""
    return torch.log(y * (1 - eps) + eps) - torch.log(1 - y * (1 - eps))


def importance_sample(probs, n):
    """Values of n pixels per image and channel of probs (B, K, h, w), drawn with
    replacement with probability proportional to the channel's map: (B, K, n). The draw
    uses torch's generator (seeded by the step, saved in checkpoints); the gradient flows
    through the drawn values, not the draw."""
    b, k = probs.shape[:2]
    flat = probs.reshape(b * k, -1)
    # a map that underflowed to all zeros still gives a valid distribution (uniform)
    idx = torch.multinomial(flat.detach().float().clamp_min(1e-30), n, replacement=True)
    return flat.gather(1, idx).view(b, k, n)


def classification_loss(logits, labels, n_samples=100, is_weight=0.8, eps=1e-3, max_weight=0.0):
    """ICAM's L_cls on logits (B, 1 + C, h, w) and multi-hot labels (B, C):
    (1 - is_weight) x multilabel soft margin of the spatially averaged foreground logits
    + is_weight x the same loss of the sampled foreground values' logits against the
    image's labels (each sample a prediction of its class). Both are means of the
    per-element binary cross-entropy, as multilabel_soft_margin_loss computes them.
    With max_weight, + max_weight x the multilabel soft margin of probs_to_logits of
    each channel's maximum softmax value, background included and labelled 1: the term
    the reference puts on its PCM-revised maps (`--rv_pooling max`), the one that tells
    the background channel to fire somewhere."""
    logits = logits.float()
    loss = F.multilabel_soft_margin_loss(logits.mean((2, 3))[:, 1:], labels)
    probs = F.softmax(logits, 1)
    if is_weight:
        s = probs_to_logits(importance_sample(probs, n_samples), eps)[:, 1:]
        sampled = F.binary_cross_entropy_with_logits(s, labels[:, :, None].expand_as(s))
        loss = (1 - is_weight) * loss + is_weight * sampled
    if max_weight:
        peak = probs_to_logits(probs.flatten(2).amax(2), eps)
        loss = loss + max_weight * F.multilabel_soft_margin_loss(
            peak, torch.cat([labels.new_ones(len(labels), 1), labels], 1))
    return loss


def pair_weights(h, w, sigma, device=None):
    """The Gaussian spatial weight of every pair of cells of an h x w grid,
    exp(-d^2 / 2 sigma^2) / (2 pi sigma^2), d the distance in cells: (hw, hw)."""
    r, c = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                          indexing="ij")
    pos = torch.stack([r.flatten(), c.flatten()], 1).float()
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    return torch.exp(-0.5 * d2 / sigma ** 2) / (2 * math.pi * sigma ** 2)


def feature_similarity_loss(rgb, probs, mu=2.5, sigma=5.0):
    """ICAM's feature-similarity loss of probs (B, K, h, w) given the image's colours rgb
    (B, 3, h, w) in [0, 1] (clamped):
        -1 / (B h w) sum_b sum_(i, j) g_ij ||y_i - y_j||^2 tanh(mu + logit(d_ij)),
    d_ij = mean over channels of |rgb_i - rgb_j| in [0, 1], logit(d) = log((d + 1e-5) /
    (1 - d + 1e-5)) (the reference's), g = pair_weights. Over all ordered pairs, as the
    reference (i = j adds 0): at the trunk's stride 16 a 448 crop has 28 x 28 cells, so
    the (hw)^2 pair matrix is small, and the sum is a graph-Laplacian quadratic form,
    sum_ij A_ij ||y_i - y_j||^2 = 2 sum_i y_i . (deg_i y_i - (A y)_i) for symmetric A:
    one (hw)^2 matrix and one matrix product per image, never a vector per pair. The
    pair sign: d < sigmoid(-mu) (0.076 for mu 2.5) pulls together, larger pushes apart.
    Computed in fp32 (no autocast)."""
    b, k, h, w = probs.shape
    with torch.autocast(probs.device.type, enabled=False):
        x = rgb.float().clamp(0, 1).flatten(2).transpose(1, 2)   # (B, hw, 3)
        y = probs.float().flatten(2).transpose(1, 2)             # (B, hw, K)
        with torch.no_grad():
            d = (torch.cdist(x, x, p=1) / x.shape[-1]).clamp(0, 1)
            a = pair_weights(h, w, sigma, x.device) * torch.tanh(
                mu + torch.log((d + 1e-5) / (1 - d + 1e-5)))
        quad = 2 * (y * (a.sum(-1, keepdim=True) * y - a @ y)).sum()
    return -quad / (b * h * w)


def cell_colours(img, size):
    """RGB in [0, 1] of ImageNet-normalised images (B, 3, H, W) at the logits' grid `size`
    (bilinear, align_corners True, as the reference shrinks them)."""
    x = F.interpolate(img.float(), size, mode="bilinear", align_corners=True)
    mean = torch.as_tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return x * std + mean


def icam_loss(logits, labels, img, n_samples=100, is_weight=0.8, eps=1e-3, fsl_weight=0.5,
              mu=2.5, sigma=5.0, max_weight=0.0):
    """ICAM's training loss of one view: classification_loss + fsl_weight x
    feature_similarity_loss of the softmax maps and the image's colours."""
    loss = classification_loss(logits, labels, n_samples, is_weight, eps, max_weight)
    if fsl_weight:
        rgb = cell_colours(img, logits.shape[-2:])
        loss = loss + fsl_weight * feature_similarity_loss(rgb, F.softmax(logits.float(), 1),
                                                           mu, sigma)
    return loss


def winner_take_all(maps):
    """Zero every class map (K, ...) where another class is higher; ties keep all
    winners (the reference's rule)."""
    if len(maps) == 0:
        return maps
    return maps * (maps == maps.amax(0, keepdim=True))


@torch.no_grad()
def icam_cams(model, imgs, size, keys):
    """ICAM maps of the classes `keys` for one image: per scale (imgs: list of (3, h, w))
    the softmax of the image and of its flip, conditioned on the labels (background +
    `keys` channels renormalised to sum 1, 1e-8 floor), foreground channels resized
    bilinearly to stride 4 and to full size, averaged over scales and flips; then
    winner-take-all per pixel and each class over its own max (+1e-5), at each size.
    Returns (cam, high_res). Runs in fp32."""
    keys = torch.as_tensor(keys, dtype=torch.long, device=imgs[0].device)
    chans = torch.cat([keys.new_zeros(1), keys + 1])
    low = high = 0
    for img in imgs:
        p = F.softmax(model(torch.stack([img, img.flip(-1)]).float()), 1)[:, chans]
        p = p / p.sum(1, keepdim=True).clamp_min(1e-8)
        lo, hi = to_cam_sizes((p[0] + p[1].flip(-1))[1:], size)
        low, high = low + lo, high + hi
    n = 2 * len(imgs)
    return tuple(normalize_max(winner_take_all(m / n)) for m in (low, high))


def weights_meta(backbone, n_classes, head_bias=False):
    """What identifies ICAM's saved weights (checked when loading them)."""
    return {"step": "train_icam", "arch": "ICAM", "backbone": backbone, "n_classes": n_classes,
            "head_bias": bool(head_bias)}


def make_icam(n_classes, backbone, pretrained, cam_weights=None, dropout=0.5, head_bias=False):
    """A new ICAM to train. pretrained: imagenet | none | a weights file for the trunk, or
    'cam': the trunk of the trained CAM classifier (cam_weights, sess/cam.pth)."""
    model = ICAM(n_classes, backbone, "none" if pretrained == "cam" else pretrained, dropout,
                 head_bias)
    return copy_cam_trunk(model, backbone, n_classes, cam_weights) if pretrained == "cam" \
        else model


def trained_icam(backbone, n_classes, path, head_bias=False):
    """ICAM with its trained weights (sess/icam.pth), checked by load_weights."""
    return load_weights(ICAM(n_classes, backbone, "none", head_bias=head_bias), path,
                        weights_meta(backbone, n_classes, head_bias))
