"""DeepLab-v1 LargeFOV (Chen et al., ICLR 2015): a dilated backbone at output stride 8,
a dilated 3x3 "fc6", a 1x1 "fc7" and a 1x1 classifier; logits upsampled to the input.
Backbones: `resnet101` (torchvision, layer3/4 dilated), `vgg16` (the original LargeFOV:
pool4/pool5 at stride 1, conv5 dilated 2) or any timm ResNet built at output stride 8."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import PipelineError
from misc.torchutils import autocast
from misc.weights import load_weights
from net.backbones import timm_model, torchvision_model
from net.resnet_cam import trained_cam_net


def _vgg16_os8(pretrained):
    feats = list(torchvision_model("vgg16", pretrained, "--seg_pretrained",
                                   ignore=("classifier.",)).features)
    for i in (23, 30):  # pool4, pool5: stride 1 keeps output stride 8
        feats[i] = nn.MaxPool2d(3, stride=1, padding=1)
    for m in feats[24:30]:  # conv5_x see the stride-1 pool4: dilate them by 2
        if isinstance(m, nn.Conv2d):
            m.dilation, m.padding = (2, 2), (2, 2)
    return nn.Sequential(*feats, nn.AvgPool2d(3, stride=1, padding=1)), 512


def _resnet_os8(name, pretrained):
    if name in ("resnet50", "resnet101", "resnet152"):
        r = torchvision_model(name, pretrained, "--seg_pretrained",
                              replace_stride_with_dilation=[False, True, True])
        trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        return trunk, r.fc.in_features
    import timm
    bare = name.removeprefix("timm:")
    if not timm.is_model(bare):
        raise PipelineError(f"--seg_backbone {name}: expected resnet101, vgg16 or a timm ResNet")
    m = timm_model(bare, pretrained, "--seg_pretrained", output_stride=8, num_classes=0,
                   global_pool="")
    return m, m.num_features


class DeepLabLargeFOV(nn.Module):
    """Dilated backbone (output stride 8) -> fc6 (3x3, dilation `fov`) -> fc7 (1x1) ->
    classifier, with ReLU + dropout between; forward returns logits at input size over
    n_labels = the dataset's classes + background."""

    def __init__(self, n_labels, backbone="resnet101", pretrained="none", fov=12, width=1024,
                 dropout=0.5):
        super().__init__()
        self.backbone, ch = _vgg16_os8(pretrained) if backbone == "vgg16" else \
            _resnet_os8(backbone, pretrained)
        self.head = nn.Sequential(
            nn.Conv2d(ch, width, 3, padding=fov, dilation=fov), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.Conv2d(width, n_labels, 1))

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return F.interpolate(self.head(self.features(x)), x.shape[2:], mode="bilinear",
                             align_corners=False)

    def param_groups(self):
        """(backbone parameters, head parameters): the head gets 10x the lr."""
        return list(self.backbone.parameters()), list(self.head.parameters())


def weights_meta(tag, backbone, fov, n_labels):
    """What identifies the segmenter's saved weights (checked when loading them)."""
    return {"step": "train_seg", "arch": "DeepLabLargeFOV", "tag": tag, "backbone": backbone,
            "fov": fov, "n_labels": n_labels}


def trained_seg_net(tag, backbone, fov, width, n_labels, path):
    """The segmenter `tag` with its trained weights (sess/<tag>.pth), checked by load_weights."""
    return load_weights(DeepLabLargeFOV(n_labels, backbone, "none", fov, width), path,
                        weights_meta(tag, backbone, fov, n_labels))


def load_cam_trunk(model, path, cam_backbone):
    """Initialise a ResNet DeepLab backbone from the trained CAM classifier (sess/cam.pth):
    the toy's stand-in for ImageNet weights. Same ResNet, so only the names differ
    (stem.0/stem.1/stages.i -> conv1/bn1/layer{i+1})."""
    ren = {}
    n_classes = model.head[-1].out_channels - 1  # the CAM classifier saw the same classes
    for k, v in trained_cam_net(cam_backbone, n_classes, path).state_dict().items():
        if k.startswith("stem.0."):
            ren["conv1." + k[7:]] = v
        elif k.startswith("stem.1."):
            ren["bn1." + k[7:]] = v
        elif k.startswith("stages."):
            i, rest = k[7:].split(".", 1)
            ren[f"layer{int(i) + 1}.{rest}"] = v
    own = model.backbone.state_dict()
    if set(own) != set(ren) or any(own[k].shape != ren[k].shape for k in own):
        raise PipelineError(f"{path}: the CAM trunk ({cam_backbone}) does not match "
                            f"--seg_backbone; use the same ResNet or --seg_pretrained none")
    model.backbone.load_state_dict(ren)


@torch.no_grad()
def seg_probs(model, imgs, size, device):
    """Class probabilities (labels,H,W): softmax averaged over scales and flips."""
    total = 0
    for img in imgs:
        x = img.to(device)[None]
        with autocast(device):
            logits = model(torch.cat([x, x.flip(-1)])).float()
        p = F.interpolate(logits.softmax(1), size, mode="bilinear", align_corners=False)
        total = total + p[0] + p[1].flip(-1)
    return total / (2 * len(imgs))
