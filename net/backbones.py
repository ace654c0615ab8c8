"""ResNet trunks by name, from torchvision or timm, with ImageNet or local weights.

Names: any torchvision ResNet builder (`resnet50`, `resnext50_32x4d`, ...) or timm ResNet
(`resnet18d`, `resnet10t`, ...); prefix `tv:` or `timm:` to pick the library explicitly.
"""
import os

import torch
import torch.nn as nn
import torchvision

from misc.errors import PipelineError


def _torchvision_names():
    return set(torchvision.models.list_models(module=torchvision.models))


def build_resnet(name, pretrained="none"):
    """A ResNet with conv1/bn1/maxpool/layer1..4. pretrained: 'imagenet', 'none' or a file."""
    lib, _, bare = name.rpartition(":")
    import timm  # imported here: it is slow to import and only trunks need it
    if lib not in ("", "tv", "timm"):
        raise PipelineError(f"backbone '{name}': prefix must be tv: or timm:")
    use_tv = lib == "tv" or (lib == "" and bare in _torchvision_names())
    imagenet = pretrained == "imagenet"
    try:
        if use_tv:
            if bare not in _torchvision_names():
                raise PipelineError(f"backbone '{name}' is not a torchvision model")
            model = torchvision.models.get_model(bare, weights="IMAGENET1K_V1" if imagenet else None)
        else:
            if not timm.is_model(bare):
                raise PipelineError(f"backbone '{name}' is neither a torchvision nor a timm model")
            model = timm.create_model(bare, pretrained=imagenet)
    except PipelineError:
        raise
    except Exception as e:  # download failures surface as URLError, HTTPError, OSError, ...
        if not imagenet:
            raise
        hint = ""
        if use_tv:
            w = torchvision.models.get_model_weights(bare)["IMAGENET1K_V1"]
            hint = f" from {w.url}"
        raise PipelineError(
            f"could not fetch ImageNet weights for '{name}' ({type(e).__name__}: {e}). Download "
            f"them{hint} on a machine with internet and pass --pretrained /path/to/file.pth") from e
    for attr in ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        if not hasattr(model, attr):
            raise PipelineError(f"backbone '{name}' is not a ResNet (no '{attr}')")
    if pretrained not in ("none", "imagenet"):
        load_backbone_file(model, pretrained)
    return model


def load_backbone_file(model, path):
    """Load a local state dict (torchvision/timm layout, classifier keys ignored)."""
    if not os.path.isfile(path):
        raise PipelineError(f"--pretrained {path}: file not found; pass imagenet, none or a "
                            f"weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PipelineError(f"--pretrained {path}: cannot load ({e}); expected a state dict "
                            f"saved with torch.save") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.startswith(("fc.", "module.fc."))}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise PipelineError(f"--pretrained {path}: does not match this backbone (missing "
                            f"{missing[:3]}, unexpected {extra[:3]}, shape mismatch {wrong[:3]}); "
                            f"pass the weights of the backbone you selected")
    model.load_state_dict(state, strict=False)


def set_last_stride(layer, stride=1):
    """Make a ResNet stage keep resolution: stride-2 convs -> stride 1, pooled shortcuts
    (the 'd' variants) -> identity. Output stride 32 -> 16, as in IRN."""
    for m in layer[0].modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (stride, stride)
        elif isinstance(m, nn.AvgPool2d) and m.stride in (2, (2, 2)):
            m.stride = m.kernel_size = 1


def stem(model):
    """conv1 + bn1 + activation + maxpool of a torchvision/timm ResNet."""
    act = getattr(model, "relu", None) or getattr(model, "act1", None) or nn.ReLU(inplace=True)
    return nn.Sequential(model.conv1, model.bn1, act, model.maxpool)


def feature_channels(model):
    return model.fc.in_features if hasattr(model.fc, "in_features") else model.num_features
