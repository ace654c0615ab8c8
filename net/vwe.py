"""VWE, visual words learning (Ru, Du & Wu, IJCAI 2021; reference: rulixiang/vwe, the
repository's root, not its v2/ IJCV extension): the CAM ResNet trunk (output stride 16,
frozen batch-norm statistics and stem, features detached after layer2) with three
multilabel heads trained together. (1) Class logits of the hybrid spatial pyramid pool
of the features (HSPP: global average plus local maxima). (2) Visual words: a learnable
codebook; every pixel is softly assigned to the words (softmax over cosines with the
detached features), the image's word histogram is classified into the image labels.
(3) Word logits from the globally averaged features, trained on the image's word labels
(the words that win at some pixel). CAMs are the ResNet CAMs of the class head
(docs/FIDELITY.md, "VWE")."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import PipelineError
from misc.weights import load_weights
from net.resnet_cam import CAMNet, copy_cam_trunk

LEVELS = (1, 2, 4)  # the pyramid's grids of cells, i x i


def hybrid_pool(x, gamma=2.0, levels=LEVELS):
    """HSPP of features x (B, C, H, W) -> (B, C): [gamma * mean(x) + sum over i in levels
    of the mean over cells of each cell's max] / (gamma + len(levels)). A level-i cell is
    (H // i) x (W // i) pixels, tiled from the top-left with stride = its size, rows and
    columns left over dropped (the reference's max_pool2d: i x i cells when i divides the
    size, as at its 512 crop's 32 x 32 grid)."""
    h, w = x.shape[-2:]
    if min(h, w) < max(levels):
        raise PipelineError(f"hybrid pooling: a {h}x{w} feature map has fewer than "
                            f"{max(levels)} cells a side; train on larger crops (--vwe_crop_size)")
    out = gamma * x.mean((2, 3))
    for i in levels:
        out = out + F.max_pool2d(x, (h // i, w // i)).mean((2, 3))
    return out / (gamma + len(levels))


def word_assignment(x, codebook):
    """Soft assignment (B, K, H, W) of every pixel of x (B, C, H, W) to the K words of
    codebook (K, C): softmax over words of the cosine between the pixel's feature,
    detached (the word losses do not train the trunk through it), and each word. fp32
    even under autocast: bf16 cannot tell apart cosines that differ in the 3rd digit."""
    with torch.autocast(x.device.type, enabled=False):
        f = F.normalize(x.detach().float(), dim=1)
        words = F.normalize(codebook.float(), dim=1)
        return F.softmax(torch.einsum("bchw,kc->bkhw", f, words), 1)


def word_histogram(assign):
    """h_k = sum over pixels of the assignment to word k: (B, K, H, W) -> (B, K)."""
    return assign.sum((2, 3))


def word_labels(assign):
    """Multi-hot (B, K) of the words that have the largest assignment at some pixel: the
    targets of the word logits (no gradient)."""
    winners = assign.detach().argmax(1).flatten(1)  # (B, H*W)
    out = torch.zeros(assign.shape[:2], device=assign.device)
    return out.scatter_(1, winners, 1.0)


class VWENet(CAMNet):
    """CAMNet (its trunk and bias-free 1x1 class head, state-dict keys shared) plus a
    codebook of n_words words, a bias-free linear map from the word histogram to the
    classes and one from the averaged features to the words. The trunk follows the
    reference: batch-norm statistics and stem frozen, stem + layer1 + layer2 never train."""

    def __init__(self, n_classes, backbone="resnet50", pretrained="none", n_words=256,
                 gamma=2.0):
        super().__init__(n_classes, backbone, pretrained, freeze_bn=True, freeze_stem=True,
                         detach_stage2=True)
        ch = self.classifier.in_channels
        self.gamma = gamma
        # the reference's kaiming_normal_(a=sqrt(5)) on (K, C, 1, 1): N(0, 1 / (3 C))
        self.codebook = nn.Parameter(torch.randn(n_words, ch) / math.sqrt(3 * ch))
        self.hist_classifier = nn.Linear(n_words, n_classes, bias=False)
        self.word_classifier = nn.Linear(ch, n_words, bias=False)

    def forward(self, x):
        """(class logits (B, C) from HSPP, histogram logits (B, C), word logits (B, K),
        word labels (B, K)) of images x (B, 3, H, W)."""
        f = self.features(x)
        assign = word_assignment(f, self.codebook)
        return (self.classifier(hybrid_pool(f, self.gamma)[:, :, None, None]).flatten(1),
                self.hist_classifier(word_histogram(assign)),
                self.word_classifier(f.mean((2, 3))), word_labels(assign))

    def param_groups(self):
        """(trunk parameters, new-layer parameters): the latter get 10x the lr."""
        backbone, _ = super().param_groups()
        return backbone, [*self.classifier.parameters(), self.codebook,
                          *self.hist_classifier.parameters(), *self.word_classifier.parameters()]


def vwe_loss(outputs, labels):
    """The reference's loss: multilabel soft margin of the class logits and of the
    histogram logits against the image labels, plus of the word logits against the word
    labels, each with weight 1."""
    logits, hist_logits, word_logits, words = outputs
    return (F.multilabel_soft_margin_loss(logits, labels)
            + F.multilabel_soft_margin_loss(hist_logits, labels)
            + F.multilabel_soft_margin_loss(word_logits, words))


def weights_meta(backbone, n_classes, n_words):
    """What identifies VWE's saved weights (checked when loading them)."""
    return {"step": "train_vwe", "arch": "VWENet", "backbone": backbone,
            "n_classes": n_classes, "n_words": n_words}


def make_vwe(n_classes, backbone, pretrained, n_words, gamma, cam_weights=None):
    """A new VWE to train. pretrained: imagenet | none | a weights file for the trunk, or
    'cam': the trunk of the trained CAM classifier (cam_weights, sess/cam.pth: the toy's
    stand-in for ImageNet weights)."""
    model = VWENet(n_classes, backbone, "none" if pretrained == "cam" else pretrained,
                   n_words, gamma)
    return copy_cam_trunk(model, backbone, n_classes, cam_weights) if pretrained == "cam" \
        else model


def trained_vwe(backbone, n_classes, n_words, path):
    """VWE with its trained weights (sess/vwe.pth), checked by load_weights."""
    return load_weights(VWENet(n_classes, backbone, "none", n_words), path,
                        weights_meta(backbone, n_classes, n_words))
