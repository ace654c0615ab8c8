"""The ResNet CAM classifier of IRN/ORANDNet: ResNet trunk at output stride 16, global
average pooling, a bias-free 1x1 conv classifier; CAMs = ReLU(classifier on features)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.cam_io import normalize_max, to_cam_sizes
from misc.weights import load_weights
from net.backbones import build_resnet, feature_channels, set_last_stride, stem


class CAMNet(nn.Module):
    """ResNet classifier whose 1x1 classifier doubles as the CAM projection."""

    def __init__(self, n_classes, backbone="resnet50", pretrained="none", freeze_bn=True,
                 freeze_stem=True, detach_stage2=False):
        super().__init__()
        r = build_resnet(backbone, pretrained)
        set_last_stride(r.layer4)
        self.stem = stem(r)
        self.stages = nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])
        self.classifier = nn.Conv2d(feature_channels(r), n_classes, 1, bias=False)
        self.freeze_bn = freeze_bn
        # the reference detaches the features after layer2, so stem, layer1 and layer2
        # never train; frozen here (same gradients, and DDP sees no unused parameter)
        frozen = [self.stem] * freeze_stem + [self.stages[0], self.stages[1]] * detach_stage2
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def features(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return x

    def forward(self, x):
        """Class logits (B, n_classes)."""
        f = self.features(x)
        return self.classifier(f.mean((2, 3), keepdim=True)).flatten(1)

    def cams(self, x):
        """Class activation maps (B, n_classes, H/16, W/16), ReLU'd, unnormalised."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def train(self, mode=True):
        # IRN keeps batch-norm statistics fixed: batches of 8-16 crops would corrupt them
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def param_groups(self):
        """(backbone parameters, new-layer parameters): the latter get 10x the lr."""
        backbone = [p for p in list(self.stem.parameters()) + list(self.stages.parameters())
                    if p.requires_grad]
        return backbone, list(self.classifier.parameters())


@torch.no_grad()
def multiscale_cams(model, imgs, size, keys, round_up=16):
    """Sum of CAMs over scales and horizontal flips for the classes `keys`, each at stride 4
    and at full size, each class divided by its own max (+1e-5). imgs: list of (3,h,w).
    round_up: each scale's full-size map is resized to the image size rounded up to this
    multiple and cropped (16: the reference; 1: straight to the image size)."""
    keys = torch.as_tensor(keys, dtype=torch.long, device=imgs[0].device)
    low = high = 0
    for img in imgs:
        c = model.cams(torch.stack([img, img.flip(-1)])).float()
        lo, hi = to_cam_sizes((c[0] + c[1].flip(-1))[keys], size, round_up)
        low, high = low + lo, high + hi
    return normalize_max(low), normalize_max(high)


def weights_meta(backbone, n_classes):
    """What identifies the CAM classifier's saved weights (checked when loading them)."""
    return {"step": "train_cam", "arch": "CAMNet", "backbone": backbone, "n_classes": n_classes}


def trained_cam_net(backbone, n_classes, path):
    """The CAM classifier with its trained weights (sess/cam.pth), checked by load_weights."""
    net = CAMNet(n_classes, backbone, "none", freeze_bn=True, freeze_stem=True)
    return load_weights(net, path, weights_meta(backbone, n_classes))


def copy_cam_trunk(model, backbone, n_classes, path):
    """Load the trunk (stem and stages) of the trained CAM classifier (sess/cam.pth) into
    `model`, a CAMNet subclass: the toy's stand-in for ImageNet weights. Returns model."""
    cam = trained_cam_net(backbone, n_classes, path)
    model.stem.load_state_dict(cam.stem.state_dict())
    model.stages.load_state_dict(cam.stages.state_dict())
    return model
