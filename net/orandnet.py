"""The OR->AND network: maps one class's OR map (1 channel) to an estimate of its AND map.
`fcn8s_vgg16` is the paper's FCN-8s on VGG-16; `small_fcn` a small encoder-decoder for
CPU toy runs. Every class map is an independent sample, so all maps of a batch go
through the network together."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.cam_io import downsample_cam, normalize_max
from misc.errors import PipelineError
from misc.weights import load_weights
from net.backbones import torchvision_model


def _bilinear_kernel(channels, size):
    """Weights that make a ConvTranspose2d a bilinear upsampler (FCN's initialisation)."""
    f = (size + 1) // 2
    c = f - 1 if size % 2 == 1 else f - 0.5
    r = torch.arange(size, dtype=torch.float32)
    k1 = 1 - (r - c).abs() / f
    w = torch.zeros(channels, channels, size, size)
    for i in range(channels):
        w[i, i] = k1[:, None] * k1[None, :]
    return w


def _up(channels, size, stride):
    m = nn.ConvTranspose2d(channels, channels, size, stride, bias=False)
    m.weight.data.copy_(_bilinear_kernel(channels, size))
    return m


class FCN8s(nn.Module):
    """FCN-8s (Long et al.) on VGG-16 with a 1-channel input (padding 100 on the first conv),
    fc6/fc7 as convolutions from VGG's ImageNet classifier, skip scores from pool3 and
    pool4, bilinear-initialised upsamplers. Two variants:
    - reference (ORANDNet's EncDec): first conv randomly initialised, score layers Xavier
      normal, unscaled skips, every crop offset (size difference) // 2 computed from the
      heights and applied to both axes;
    - at_once (FCN's 'at-once' recipe): first conv = the mean of VGG's RGB filters, zero
      score layers, skips scaled 1e-2 (pool4) and 1e-4 (pool3), the geometric offsets
      5, 9 and 31 on each axis."""

    def __init__(self, pretrained="imagenet", n_out=1, variant="reference"):
        super().__init__()
        if variant not in ("reference", "at_once"):
            raise PipelineError(f"--orand_fcn {variant}: expected reference or at_once")
        self.variant = variant
        vgg = torchvision_model("vgg16", pretrained, "--orand_pretrained", ignore=("classifier.6.",))
        feats = list(vgg.features)
        rgb = feats[0]
        feats[0] = nn.Conv2d(1, 64, 3, padding=100)
        if variant == "at_once":
            with torch.no_grad():  # a grey input: the mean of the RGB filters keeps their features
                feats[0].weight.copy_(rgb.weight.mean(1, keepdim=True))
                feats[0].bias.copy_(rgb.bias)
        for m in feats:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
        self.to_pool3, self.to_pool4, self.to_pool5 = (nn.Sequential(*feats[a:b])
                                                       for a, b in ((0, 17), (17, 24), (24, 31)))
        fc6, fc7 = nn.Conv2d(512, 4096, 7), nn.Conv2d(4096, 4096, 1)
        with torch.no_grad():
            if pretrained == "none" and variant == "reference":
                nn.init.xavier_normal_(fc6.weight)  # the reference's init before any copy
                nn.init.xavier_normal_(fc7.weight)
            else:
                fc6.weight.copy_(vgg.classifier[0].weight.view(4096, 512, 7, 7))
                fc6.bias.copy_(vgg.classifier[0].bias)
                fc7.weight.copy_(vgg.classifier[3].weight.view(4096, 4096, 1, 1))
                fc7.bias.copy_(vgg.classifier[3].bias)
        self.fc = nn.Sequential(fc6, nn.ReLU(inplace=True), nn.Dropout2d(),
                                fc7, nn.ReLU(inplace=True), nn.Dropout2d())
        self.score_fr, self.score_pool4, self.score_pool3 = (
            nn.Conv2d(c, n_out, 1) for c in (4096, 512, 256))
        for m in (self.score_fr, self.score_pool4, self.score_pool3):
            if variant == "reference":
                nn.init.xavier_normal_(m.weight)  # biases keep PyTorch's default init
            else:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        self.up2, self.up_pool4, self.up8 = _up(n_out, 4, 2), _up(n_out, 4, 2), _up(n_out, 16, 8)

    def _crop(self, x, like, offset):
        """x cropped to like's size: at (offset, offset) (at_once) or at the reference's
        (x height - like height) // 2 on both axes."""
        c = offset if self.variant == "at_once" else (x.shape[2] - like.shape[2]) // 2
        return x[:, :, c:c + like.shape[2], c:c + like.shape[3]]

    def forward(self, x):
        p3 = self.to_pool3(x)
        p4 = self.to_pool4(p3)
        k4, k3 = (1e-2, 1e-4) if self.variant == "at_once" else (1.0, 1.0)
        s = self.up2(self.score_fr(self.fc(self.to_pool5(p4))))
        s = s + self._crop(self.score_pool4(p4 * k4), s, 5)
        s = self.up_pool4(s)
        s = s + self._crop(self.score_pool3(p3 * k3), s, 9)
        return self._crop(self.up8(s), x, 31)


def _double_conv(a, b):
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(b, b, 3, padding=1), nn.ReLU(inplace=True))


class SmallFCN(nn.Module):
    """Toy OR->AND network: a 3-level encoder-decoder (16-32-64 channels) with skip
    connections; no normalisation, so a map's output never depends on its batch-mates."""

    def __init__(self, width=16, n_out=1):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.enc1, self.enc2, self.enc3 = _double_conv(1, c1), _double_conv(c1, c2), _double_conv(c2, c3)
        self.dec2, self.dec1 = _double_conv(c3 + c2, c2), _double_conv(c2 + c1, c1)
        self.out = nn.Conv2d(c1, n_out, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % 4, 0, -h % 4))  # two poolings need sides divisible by 4
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, e2.shape[2:], mode="bilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, e1.shape[2:], mode="bilinear"), e1], 1))
        return self.out(d1)[:, :, :h, :w]


def build_orandnet(name, pretrained="none", variant="reference"):
    """The OR->AND network by name: fcn8s_vgg16 (paper; variant: see FCN8s) or small_fcn
    (toy)."""
    if name == "fcn8s_vgg16":
        return FCN8s(pretrained, variant=variant)
    if name == "small_fcn":
        return SmallFCN()
    raise PipelineError(f"--orand_net {name}: expected fcn8s_vgg16 or small_fcn")


def orand_loss(logits, target, kind):
    """logits (K,1,H,W) of one image's K class maps, target (K,H,W) AND maps.
    bce: per-pixel binary cross-entropy. ce: the reference's soft-target cross-entropy
    across the class axis, which gives no gradient when K = 1 (softmax over one channel)."""
    x = logits[:, 0].float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(x, target)
    if kind == "ce":
        return -(target * F.log_softmax(x, dim=0)).sum(0).mean()
    raise PipelineError(f"--orand_loss {kind}: expected bce or ce")


def orand_maps(logits, kind):
    """Network output (K,1,H,W) -> non-negative maps (K,H,W): the sigmoid for a bce-trained
    net (its estimate of AND), ReLU of the raw output for ce as in the reference."""
    x = logits[:, 0].float()
    return torch.sigmoid(x) if kind == "bce" else F.relu(x)


def weights_meta(name, loss, variant="reference"):
    """What identifies the OR->AND network's saved weights (checked when loading them)."""
    arch = f"{name}:{variant}" if name == "fcn8s_vgg16" else name
    return {"step": "train_orandnet", "arch": arch, "loss": loss}


def trained_orandnet(name, loss, path, variant="reference"):
    """The OR->AND network with its trained weights (sess/orandnet.pth)."""
    return load_weights(build_orandnet(name, "none", variant), path,
                        weights_meta(name, loss, variant))


@torch.no_grad()
def orandnet_cams(model, or_maps, loss, device):
    """(cam, high_res) maps of one image from its OR maps (K,H,W): all K class maps in one
    batch, non-negative output, each class divided by its max at full size; the stride-4
    maps are those normalised maps resized (as the reference)."""
    if len(or_maps) == 0:
        return downsample_cam(or_maps)
    maps = orand_maps(model(or_maps.to(device)[:, None]), loss)  # fp32, as the reference
    return downsample_cam(normalize_max(maps))
