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


def _fetch_error(name, flag, e, url=""):
    return PipelineError(
        f"could not fetch ImageNet weights for '{name}' ({type(e).__name__}: {e}). Download "
        f"them{' from ' + url if url else ''} on a machine with internet and pass "
        f"{flag} /path/to/file.pth")


def torchvision_model(name, pretrained="none", flag="--pretrained", ignore=("fc.",), **kw):
    """A torchvision model by builder name with ImageNet weights ('imagenet'), none, or a
    local state dict (keys starting with `ignore` skipped); `kw` go to the builder.
    Offline: says what to fetch."""
    if name not in _torchvision_names():
        raise PipelineError(f"'{name}' is not a torchvision model")
    if pretrained != "imagenet":
        model = torchvision.models.get_model(name, weights=None, **kw)
        if pretrained != "none":
            load_backbone_file(model, pretrained, flag, ignore)
        return model
    try:
        return torchvision.models.get_model(name, weights="IMAGENET1K_V1", **kw)
    except Exception as e:  # download failures surface as URLError, HTTPError, OSError, ...
        raise _fetch_error(name, flag, e, torchvision.models.get_model_weights(name)["IMAGENET1K_V1"].url) from e


def timm_model(name, pretrained="none", flag="--pretrained", **kw):
    """A timm model with ImageNet weights ('imagenet'), none, or a local state dict; `kw`
    go to timm.create_model. Offline: says what to fetch."""
    import timm  # imported here: it is slow to import
    try:
        model = timm.create_model(name, pretrained=pretrained == "imagenet", **kw)
    except Exception as e:
        if pretrained != "imagenet":
            raise
        raise _fetch_error(name, flag, e) from e
    if pretrained not in ("none", "imagenet"):
        load_backbone_file(model, pretrained, flag)
    return model


def build_resnet(name, pretrained="none"):
    """A ResNet with conv1/bn1/maxpool/layer1..4. pretrained: 'imagenet', 'none' or a file."""
    lib, _, bare = name.rpartition(":")
    import timm  # imported here: it is slow to import and only trunks need it
    if lib not in ("", "tv", "timm"):
        raise PipelineError(f"backbone '{name}': prefix must be tv: or timm:")
    if lib == "tv" or (lib == "" and bare in _torchvision_names()):
        model = torchvision_model(bare, pretrained)
    else:
        if not timm.is_model(bare):
            raise PipelineError(f"backbone '{name}' is neither a torchvision nor a timm model")
        model = timm_model(bare, pretrained)
    for attr in ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        if not hasattr(model, attr):
            raise PipelineError(f"backbone '{name}' is not a ResNet (no '{attr}')")
    return model


def load_backbone_file(model, path, flag="--pretrained", ignore=("fc.",), adapt=None):
    """Load a local state dict (torchvision/timm layout; .pth or .safetensors); keys
    starting with `ignore` (the ImageNet classifier) are skipped, any other mismatch is
    refused. adapt(state, model) may rewrite the state first (e.g. resize embeddings)."""
    if not os.path.isfile(path):
        raise PipelineError(f"{flag} {path}: file not found; pass imagenet, none or a "
                            f"weights file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # installed with timm
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PipelineError(f"{flag} {path}: cannot load ({e}); expected a state dict "
                            f"saved with torch.save or safetensors") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    skip = lambda k: bool(ignore) and k.startswith(ignore)  # noqa: E731
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if adapt is not None:
        state = adapt(state, model)
    state = {k: v for k, v in state.items() if not skip(k)}
    own = {k: v for k, v in model.state_dict().items() if not skip(k)}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise PipelineError(f"{flag} {path}: does not match this backbone (missing "
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
