"""The ViT classifier (any timm ViT/DeiT) and its CAMs: transformer attribution
(gradient-weighted attention rollout, Chefer et al. 2021) or Grad-CAM on the patch
tokens entering the last block. Hooks on timm's attention modules; no forked ViT."""
import torch
import torch.nn as nn
from timm.layers import Attention

from misc.errors import PipelineError
from misc.weights import load_weights


def build_vit(name, img_size, n_classes, pretrained="none", patch_size=None, depth=None):
    """A timm ViT with a `n_classes` head at `img_size` (position embeddings resized).
    patch_size/depth override the named architecture (small toy models)."""
    import timm
    if not timm.is_model(name):
        raise PipelineError(f"--vit_backbone '{name}' is not a timm model")
    kw = dict(num_classes=n_classes, img_size=img_size)
    kw.update({k: v for k, v in (("patch_size", patch_size), ("depth", depth)) if v})
    if pretrained not in ("none", "imagenet"):
        kw["pretrained_cfg_overlay"] = {"file": pretrained}
    try:
        model = timm.create_model(name, pretrained=pretrained != "none", **kw)
    except TypeError as e:  # a non-ViT builder rejects img_size / patch_size / depth
        raise PipelineError(f"--vit_backbone '{name}' is not a plain ViT/DeiT ({e})") from e
    except Exception as e:  # hub failures: OSError, HTTP errors, LocalEntryNotFoundError...
        if pretrained == "none":
            raise
        raise PipelineError(
            f"could not load {pretrained} weights for '{name}' ({type(e).__name__}: {str(e)[:200]}). "
            f"Download the timm/Hugging Face weights of '{name}' on a machine with internet and "
            f"pass --vit_pretrained /path/to/file (.pth or .safetensors)") from e
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(isinstance(getattr(b, "attn", None), Attention) for b in blocks):
        raise PipelineError(f"--vit_backbone '{name}' is not a plain ViT/DeiT (timm Attention blocks)")
    if getattr(model, "global_pool", "token") != "token":
        raise PipelineError(f"--vit_backbone '{name}' pools '{model.global_pool}'; attribution "
                            f"reads the class token, so pick a class-token ViT/DeiT")
    return model


class ViTClassifier(nn.Module):
    """timm ViT whose head predicts the dataset's classes from the class token."""

    def __init__(self, name, img_size, n_classes, pretrained="none", patch_size=None, depth=None):
        super().__init__()
        self.vit = build_vit(name, img_size, n_classes, pretrained, patch_size, depth)

    def forward(self, x):
        return self.vit(x)

    def param_groups(self):
        """(backbone parameters, head parameters): the head gets 10x the lr."""
        head = list(self.vit.get_classifier().parameters())
        ids = {id(p) for p in head}
        return [p for p in self.vit.parameters() if id(p) not in ids], head

    def grid(self):
        """(rows, columns) of the patch grid."""
        return tuple(self.vit.patch_embed.grid_size)


def vit_cams(model, x, keys, method="attribution"):
    """Maps (K, rows, cols) of the classes `keys` for one image x (1,3,S,S), all classes in
    one batched forward + backward: the image is repeated K times and sample k
    backpropagates the logit of class keys[k]."""
    vit = model.vit
    k = len(keys)
    if k == 0:
        return torch.zeros((0,) + model.grid(), device=x.device)
    attn_mods = [b.attn for b in vit.blocks]
    saved, hooks = [], []

    def keep(_, __, out):  # the tensor and, once backward runs, its gradient
        entry = {"a": out}
        out.register_hook(lambda g: entry.__setitem__("g", g))
        saved.append(entry)

    fused = [m.fused_attn for m in attn_mods]
    try:
        if method == "attribution":
            for m in attn_mods:
                m.fused_attn = False  # materialise the attention map so it can be hooked
                hooks.append(m.attn_drop.register_forward_hook(keep))
        elif method == "gradcam":
            hooks.append(vit.blocks[-1].norm1.register_forward_hook(keep))
        else:
            raise PipelineError(f"--vit_cam_method {method}: expected attribution or gradcam")
        with torch.enable_grad():
            logits = vit(x.expand(k, -1, -1, -1))
            idx = torch.as_tensor(keys, device=x.device, dtype=torch.long)
            vit.zero_grad(set_to_none=True)
            logits.float().gather(1, idx[:, None]).sum().backward()
    finally:
        for h in hooks:
            h.remove()
        for m, f in zip(attn_mods, fused):
            m.fused_attn = f
    p = vit.num_prefix_tokens
    if method == "attribution":
        n = saved[0]["a"].shape[-1]
        rel = torch.eye(n, device=x.device).expand(k, n, n)
        for e in saved:  # R <- R + mean_heads((grad * attn)^+) R
            a_bar = (e["g"].float() * e["a"].float()).clamp(min=0).mean(1)
            rel = rel + torch.bmm(a_bar, rel)
        cam = rel[:, 0, p:]
    else:
        tok, grad = saved[0]["a"][:, p:].float(), saved[0]["g"][:, p:].float()
        cam = torch.relu((tok * grad.mean(1, keepdim=True)).sum(-1))
    rows, cols = model.grid()
    assert rows * cols == cam.shape[1], "patch grid and token count disagree"
    return cam.detach().view(k, rows, cols)


def weights_meta(backbone, img_size, patch_size, depth, n_classes):
    """What identifies the ViT classifier's saved weights (checked when loading them)."""
    return {"step": "train_vit", "arch": "ViTClassifier", "backbone": backbone,
            "img_size": img_size, "patch_size": patch_size or 0, "depth": depth or 0,
            "n_classes": n_classes}


def trained_vit(backbone, img_size, patch_size, depth, n_classes, path):
    """The ViT classifier with its trained weights (sess/vit.pth), checked by load_weights."""
    model = ViTClassifier(backbone, img_size, n_classes, "none", patch_size, depth)
    return load_weights(model, path, weights_meta(backbone, img_size, patch_size, depth, n_classes))

