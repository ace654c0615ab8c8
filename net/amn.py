"""AMN, the activation manipulation network (Lee, Kim & Shim, CVPR 2022; reference:
gaviotas/AMN, branch voc12): the CAM ResNet trunk (output stride 16, frozen batch-norm
statistics and stem, every stage training), label conditioning (features times a linear
map of the image's label vector, broadcast over space; the true labels are fed at
inference too), Dropout(0.1) and a sum of four dilated 3x3 convs to background + classes.
Trained per pixel on confident labels with soft targets (the PCL loss); its CAMs are the
softmax over background + classes, min-max normalised except where the confident labels
say background (docs/FIDELITY.md, "AMN")."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.cam_io import strided_size
from misc.metrics import IGNORE
from misc.weights import load_weights
from net.resnet_cam import CAMNet, copy_cam_trunk


class ASPP(nn.Module):
    """Sum of 3x3 convs at several dilation rates (DeepLab-v2's head), weights N(0, 0.01),
    biases 0, as AMN initialises them."""

    def __init__(self, in_ch, out_ch, rates=(6, 12, 18, 24)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch, out_ch, 3, padding=r, dilation=r)
                                   for r in rates)
        for c in self.convs:
            nn.init.normal_(c.weight, 0, 0.01)
            nn.init.zeros_(c.bias)

    def forward(self, x):
        return sum(c(x) for c in self.convs)


class AMN(CAMNet):
    """CAMNet's trunk (its stem and stages; state-dict keys shared, so a trained CAM
    classifier's trunk loads as is) with label conditioning and the ASPP head; the 1x1
    CAM classifier is dropped. Batch-norm statistics and the stem are frozen, no stage is
    detached (AMN's own forward has no detach)."""

    def __init__(self, n_classes, backbone="resnet50", pretrained="none", dropout=0.1):
        super().__init__(n_classes, backbone, pretrained, freeze_bn=True, freeze_stem=True)
        ch = self.classifier.in_channels
        del self.classifier
        self.label_enc = nn.Linear(n_classes, ch)
        self.dropout = nn.Dropout(dropout)
        self.head = ASPP(ch, n_classes + 1)

    def forward(self, x, labels):
        """Logits (B, 1 + n_classes, H/16, W/16) of images x (B,3,H,W) given their multi-hot
        labels (B, n_classes): the label enters only through label_enc, once per image."""
        f = self.features(x) * self.label_enc(labels)[:, :, None, None]
        return self.head(self.dropout(f))

    def cams(self, x):
        raise NotImplementedError("AMN's maps need the labels: use amn_cams")

    def param_groups(self):
        """(trunk parameters, new-layer parameters): AMN's two learning rates."""
        trunk = [p for p in list(self.stem.parameters()) + list(self.stages.parameters())
                 if p.requires_grad]
        return trunk, list(self.label_enc.parameters()) + list(self.head.parameters())


def nearest_index(n_in, n_out, device=None):
    """Source index of each of n_out samples in PIL's nearest resize of n_in pixels:
    floor((i + 0.5) * n_in / n_out), the pixel under each output cell's centre."""
    i = torch.arange(n_out, device=device, dtype=torch.float64)
    return ((i + 0.5) * n_in / n_out).floor().long().clamp(max=n_in - 1)


def resize_labels(labels, size):
    """Label maps (B, H, W) to `size` by nearest sampling, as AMN shrinks its confident
    labels to the logit grid (PIL nearest: ids never blend)."""
    h, w = labels.shape[-2:]
    rows, cols = nearest_index(h, size[0], labels.device), nearest_index(w, size[1], labels.device)
    return labels[..., rows[:, None], cols[None, :]]


def pcl_loss(logits, labels, eps=0.4):
    """AMN's per-pixel classification loss: cross-entropy of the softmax over the C
    channels against soft targets (1 - eps on the confident label, eps / (C - 1) on every
    other channel), averaged over background pixels and over foreground pixels
    separately, then the two means averaged; 255 is ignored. labels: (B, h, w) at the
    logits' size. A group without pixels is left out (the reference's 0/0 would be NaN)."""
    c = logits.shape[1]
    logp = F.log_softmax(logits.float(), 1)
    hard = labels.clone()
    hard[labels == IGNORE] = 0
    target = torch.full_like(logp, eps / (c - 1)).scatter_(1, hard[:, None], 1 - eps)
    per_pixel = -(target * logp).sum(1)
    means = [per_pixel[m].mean() for m in (labels == 0, (labels != 0) & (labels != IGNORE))
             if m.any()]
    return sum(means) / len(means) if means else logits.sum() * 0


def background_exception(probs, bg_mask, eps=1e-5):
    """AMN's CAM normalisation: each channel of probs (K, h, w) min-max scaled (+eps in the
    denominator), except at pixels where bg_mask (h, w) is true (the confident labels say
    background): there the raw softmax value is kept, so confident background stays low."""
    flat = probs.flatten(1)
    lo = flat.amin(1)[:, None, None]
    hi = flat.amax(1)[:, None, None]
    norm = (probs - lo) / (hi - lo + eps)
    return torch.where(bg_mask[None], probs, norm)


@torch.no_grad()
def amn_cams(model, imgs, size, keys, ir_label):
    """AMN maps of the classes `keys` for one image: per scale (imgs: list of (3,h,w)) the
    logits of the image and its flip averaged (labels fed: the image's own), resized
    bilinearly to stride 4 and to full size and averaged over scales; softmax over
    background + classes; background and labelled channels kept; background exception
    against the confident labels ir_label (H, W; 0 = background) resized by nearest.
    Returns (cam, high_res) of the foreground classes (the background channel is not
    kept: nothing downstream reads it). Runs in fp32."""
    dev = imgs[0].device
    keys = torch.as_tensor(keys, dtype=torch.long, device=dev)
    n = model.label_enc.in_features
    onehot = torch.zeros(1, n, device=dev)
    onehot[0, keys] = 1
    sizes = (strided_size(*size), tuple(size))
    acc = [0, 0]
    for img in imgs:
        logit = model(torch.stack([img, img.flip(-1)]).float(), onehot.expand(2, n))
        logit = (logit[0] + logit[1].flip(-1)) / 2
        for j, s in enumerate(sizes):
            acc[j] = acc[j] + F.interpolate(logit[None], s, mode="bilinear",
                                            align_corners=False)[0]
    chans = torch.cat([keys.new_zeros(1), keys + 1])
    label = torch.as_tensor(np.asarray(ir_label, np.int64), device=dev)
    out = []
    for a, s in zip(acc, sizes):
        probs = F.softmax(a / len(imgs), 0)[chans]
        bg = resize_labels(label, s) == 0
        out.append(background_exception(probs, bg)[1:])
    return tuple(out)


def weights_meta(backbone, n_classes):
    """What identifies AMN's saved weights (checked when loading them)."""
    return {"step": "train_amn", "arch": "AMN", "backbone": backbone, "n_classes": n_classes}


def make_amn(n_classes, backbone, pretrained, cam_weights=None):
    """A new AMN to train. pretrained: imagenet | none | a weights file for the trunk, or
    'cam': the trunk of the trained CAM classifier (cam_weights, sess/cam.pth: the toy's
    stand-in for ImageNet weights)."""
    model = AMN(n_classes, backbone, "none" if pretrained == "cam" else pretrained)
    return copy_cam_trunk(model, backbone, n_classes, cam_weights) if pretrained == "cam" \
        else model


def trained_amn(backbone, n_classes, path):
    """AMN with its trained weights (sess/amn.pth), checked by load_weights."""
    return load_weights(AMN(n_classes, backbone, "none"), path, weights_meta(backbone, n_classes))
