"""The ViT classifier (any timm ViT/DeiT) and its CAMs: LRP transformer attribution
(Chefer, Gur & Wolf 2021, the reference's method), the gradient-weighted attention
rollout, or Grad-CAM on the patch tokens entering the last block. A functional replay of
timm's forward over its own modules; no forked ViT."""
import torch
import torch.nn as nn
from timm.layers import Attention

from misc.errors import PipelineError
from misc.weights import load_weights
from net.backbones import load_backbone_file


def build_vit(name, img_size, n_classes, pretrained="none", patch_size=None, depth=None):
    """A timm ViT with a `n_classes` head at `img_size`. patch_size/depth override the named
    architecture (small toy models). ImageNet or file weights come at their own size and
    their position embeddings are resized bilinearly, as the reference resizes DeiT's
    14x14 grid to 32x32 (timm's own loader would use bicubic)."""
    import timm
    if not timm.is_model(name):
        raise PipelineError(f"--vit_backbone '{name}' is not a timm model")
    kw = dict(num_classes=n_classes, img_size=img_size)
    kw.update({k: v for k, v in (("patch_size", patch_size), ("depth", depth)) if v})
    try:
        model = timm.create_model(name, pretrained=False, **kw)
        if pretrained == "imagenet":
            state = timm.create_model(name, pretrained=True, **{k: v for k, v in kw.items()
                                                                  if k != "img_size"}).state_dict()
    except TypeError as e:  # a non-ViT builder rejects img_size / patch_size / depth
        raise PipelineError(f"--vit_backbone '{name}' is not a plain ViT/DeiT ({e})") from e
    except Exception as e:  # hub failures: OSError, HTTP errors, LocalEntryNotFoundError...
        if pretrained != "imagenet":
            raise
        raise PipelineError(
            f"could not load ImageNet weights for '{name}' ({type(e).__name__}: {str(e)[:200]}). "
            f"Download the timm/Hugging Face weights of '{name}' on a machine with internet and "
            f"pass --vit_pretrained /path/to/file (.pth or .safetensors)") from e
    if pretrained == "imagenet":
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(_resize_pos_embed(state, model), strict=False)
    elif pretrained != "none":
        load_backbone_file(model, pretrained, "--vit_pretrained", ("head.",), _resize_pos_embed)
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(isinstance(getattr(b, "attn", None), Attention) for b in blocks):
        raise PipelineError(f"--vit_backbone '{name}' is not a plain ViT/DeiT (timm Attention blocks)")
    if getattr(model, "global_pool", "token") != "token":
        raise PipelineError(f"--vit_backbone '{name}' pools '{model.global_pool}'; attribution "
                            f"reads the class token, so pick a class-token ViT/DeiT")
    return model


def _resize_pos_embed(state, model):
    """The state's position embeddings (class token first) resized to the model's patch
    grid: bilinear, align_corners False, no antialias (the reference's F.interpolate);
    a timm-original patch embedding stored as a linear layer becomes a conv."""
    state = dict(state)
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 2:
        state["patch_embed.proj.weight"] = w.reshape(model.patch_embed.proj.weight.shape)
    pos = state.get("pos_embed")
    want = model.pos_embed.shape
    if pos is not None and pos.shape != want:
        p = model.num_prefix_tokens
        n_old = pos.shape[1] - p
        side = int(round(n_old ** 0.5))
        if side * side != n_old:
            raise PipelineError(f"--vit_pretrained: position embeddings of {n_old} patches are "
                                f"not a square grid; pass weights of a square-grid ViT")
        grid = pos[:, p:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid.float(), model.patch_embed.grid_size,
                                               mode="bilinear", align_corners=False)
        state["pos_embed"] = torch.cat([pos[:, :p], grid.permute(0, 2, 3, 1).reshape(
            1, -1, want[-1]).to(pos.dtype)], 1)
    return state


class ViTClassifier(nn.Module):
    """timm ViT whose head predicts the dataset's classes from the class token."""

    def __init__(self, name, img_size, n_classes, pretrained="none", patch_size=None, depth=None,
                 freeze_patch_embed=False):
        super().__init__()
        self.vit = build_vit(name, img_size, n_classes, pretrained, patch_size, depth)
        if freeze_patch_embed:  # the reference freezes the patch projection's weight, not its bias
            self.vit.patch_embed.proj.weight.requires_grad_(False)

    def forward(self, x):
        return self.vit(x)

    def param_groups(self):
        """(backbone parameters, head parameters): the head gets 10x the lr."""
        head = list(self.vit.get_classifier().parameters())
        ids = {id(p) for p in head}
        return [p for p in self.vit.parameters() if id(p) not in ids and p.requires_grad], head

    def grid(self):
        """(rows, columns) of the patch grid."""
        return tuple(self.vit.patch_embed.grid_size)


METHODS = ("lrp", "grad_attn", "gradcam")


def _check_plain_blocks(vit):
    """The functional forward below replays timm's block maths; refuse blocks with extras
    (layer scale, post-attention norm, q/k norm, gates) it would silently skip. Stochastic
    depth is allowed in eval mode only, where it is the identity."""
    from timm.layers import DropPath
    for b in vit.blocks:
        plain = (nn.Identity, nn.Dropout) + ((DropPath,) if not b.training else ())
        extras = [getattr(b, n, None) for n in ("ls1", "ls2", "drop_path1", "drop_path2")]
        extras += [getattr(b.attn, n, None) for n in ("q_norm", "k_norm", "norm")]
        if any(e is not None and not isinstance(e, plain) for e in extras) or \
                getattr(b.attn, "gate", None) is not None:
            raise PipelineError("ViT CAMs need plain ViT/DeiT blocks (no layer scale, q/k norm "
                                "or gates) in eval mode")
    if not isinstance(getattr(vit, "fc_norm", nn.Identity()), nn.Identity):
        raise PipelineError("ViT CAMs read the class token after the final norm: pick a "
                            "ViT/DeiT without fc_norm")


def tape_block(b, x):
    """One timm ViT block's forward written out (eval mode: no dropout, no stochastic
    depth), keeping what the CAMs need: its input x, the attention's q, k, v, map `attn`
    (B, heads, N, N) and output, the residual sums, the MLP's activations, and the
    block's output `out`. The attention map stays in the graph (its gradient is read)."""
    a = b.attn
    t = {"x": x, "h1": b.norm1(x)}
    bsz, n, c = x.shape
    q, k, v = a.qkv(t["h1"]).reshape(bsz, n, 3, a.num_heads, c // a.num_heads) \
        .permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(-1)
    o = (attn @ v).transpose(1, 2).reshape(bsz, n, c)
    t.update(q=q, k=k, v=v, attn=attn, o=o, y=a.proj(o))
    t["x1"] = x + t["y"]
    t["h2"] = b.norm2(t["x1"])
    t["g"] = b.mlp.act(b.mlp.fc1(t["h2"]))
    t["f2"] = b.mlp.fc2(t["g"])
    t["out"] = t["x1"] + t["f2"]
    return t


def _tape(vit, x):
    """timm's ViT forward written out block by block (tape_block), keeping each block's
    tape for the CAMs."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    blocks = []
    for b in vit.blocks:
        blocks.append(tape_block(b, x))
        x = blocks[-1]["out"]
    feat = vit.norm(x)
    return vit.forward_head(feat), feat, blocks


def _safe_divide(a, b):
    """a / b where b != 0, else 0, with the reference's stabiliser (+1e-9)."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def _lrp_linear(r, x, w):
    """The z+ rule (alpha 1, beta 0) of a linear layer without its bias: relevance r of the
    outputs goes to the inputs x in proportion to x+ w+ and x- w-."""
    pw, nw, px, nx = w.clamp(min=0), w.clamp(max=0), x.clamp(min=0), x.clamp(max=0)
    s = _safe_divide(r, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def _lrp_add(r, a, b):
    """Relevance of a + b split by each term's share, then rescaled so that both parts
    keep their share of the total |relevance| (the reference's Add rule)."""
    s = _safe_divide(r, a + b)
    ra, rb = a * s, b * s
    sa, sb = ra.sum(), rb.sum()
    total = r.sum()
    ra = ra * _safe_divide(_safe_divide(sa.abs(), sa.abs() + sb.abs()) * total, ra.sum())
    rb = rb * _safe_divide(_safe_divide(sb.abs(), sa.abs() + sb.abs()) * total, rb.sum())
    return ra, rb


def _lrp_matmul(r, a, b):
    """Relevance of the product a @ b split between its two factors (half each)."""
    s = _safe_divide(r, a @ b)
    return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


def _attention_relevance(vit, feat, blocks, cls):
    """Relevance of each block's attention map for class `cls`, propagated from the logit
    by LRP (Chefer, Gur & Wolf 2021, as in ORANDNet's reference): z+ rule through linear
    layers, identity through LayerNorm, GELU and softmax, the Add rule at residuals,
    half-and-half through the two attention products."""
    head = vit.get_classifier()
    r = torch.zeros(1, head.out_features, device=feat.device, dtype=feat.dtype)
    r[0, cls] = 1.0
    x0 = feat[:, 0]
    r = _lrp_linear(r, x0, head.weight.float())
    rt = torch.zeros_like(feat)
    rt[:, 0] = x0 * _safe_divide(r, x0)  # the class-token pooling (IndexSelect rule)
    rel = [None] * len(blocks)
    for i in reversed(range(len(blocks))):
        t, b = blocks[i], vit.blocks[i]
        r_res, r_mlp = _lrp_add(rt, t["x1"], t["f2"])
        r_mlp = _lrp_linear(_lrp_linear(r_mlp, t["g"], b.mlp.fc2.weight), t["h2"], b.mlp.fc1.weight)
        rt = t["x1"] * (_safe_divide(r_res, t["x1"]) + _safe_divide(r_mlp, t["x1"]))
        r_res, r_att = _lrp_add(rt, t["x"], t["y"])
        bsz, n, c = t["x"].shape
        r_att = _lrp_linear(r_att, t["o"], b.attn.proj.weight)
        r_att = r_att.reshape(bsz, n, b.attn.num_heads, -1).transpose(1, 2)
        rel[i], r_v = _lrp_matmul(r_att, t["attn"], t["v"])
        if i == 0:
            break  # the input's relevance is not needed
        r_q, r_k = _lrp_matmul(rel[i], t["q"], t["k"].transpose(-2, -1))
        r_qkv = torch.stack([r_q, r_k.transpose(-2, -1), r_v]).permute(1, 3, 0, 2, 4)
        r_h1 = _lrp_linear(r_qkv.reshape(bsz, n, 3 * c), t["h1"], b.attn.qkv.weight)
        rt = t["x"] * (_safe_divide(r_res, t["x"]) + _safe_divide(r_h1, t["x"]))
    return rel


def vit_cams(model, x, keys, method="lrp"):
    """Maps (K, rows, cols) of the classes `keys` for one image x (1,3,S,S). One forward,
    then per class one backward (memory does not grow with the class count):
    - lrp: transformer attribution (Chefer et al. 2021): in each block the LRP relevance
      of the attention map times its gradient, positive part, mean over heads, rolled out
      R <- R + A R from the identity; the class token's row over the patches;
    - grad_attn: the same rollout with the attention map itself in place of its relevance
      (Chefer et al.'s later generic-attention variant);
    - gradcam: Grad-CAM on the patch tokens entering the last block.
    Runs in fp32 (autocast off), as the reference."""
    if method not in METHODS:
        raise PipelineError(f"--vit_cam_method {method}: expected one of {', '.join(METHODS)}")
    vit = model.vit
    rows, cols = model.grid()
    if len(keys) == 0:
        return torch.zeros((0, rows, cols), device=x.device)
    _check_plain_blocks(vit)
    p = vit.num_prefix_tokens
    cams = []
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        logits, feat, blocks = _tape(vit, x.float())
        wrt = [t["attn"] for t in blocks] if method != "gradcam" else [blocks[-1]["h1"]]
        for j, cls in enumerate(keys):
            grads = torch.autograd.grad(logits[0, int(cls)], wrt, retain_graph=j < len(keys) - 1)
            with torch.no_grad():
                if method == "gradcam":
                    tok, g = blocks[-1]["h1"][0, p:], grads[0][0, p:]
                    cams.append(torch.relu((tok * g.mean(0, keepdim=True)).sum(-1)))
                    continue
                maps = _attention_relevance(vit, feat, blocks, int(cls)) if method == "lrp" \
                    else [t["attn"] for t in blocks]
                n = feat.shape[1]
                rel = torch.eye(n, device=x.device)
                for m, g in zip(maps, grads):  # R <- R + mean_heads((grad * map)^+) R
                    rel = rel + (g[0] * m[0]).clamp(min=0).mean(0) @ rel
                cams.append(rel[0, p:])
    cams = torch.stack(cams)
    assert rows * cols == cams.shape[1], "patch grid and token count disagree"
    return cams.detach().view(len(keys), rows, cols)


def weights_meta(backbone, img_size, patch_size, depth, n_classes):
    """What identifies the ViT classifier's saved weights (checked when loading them)."""
    return {"step": "train_vit", "arch": "ViTClassifier", "backbone": backbone,
            "img_size": img_size, "patch_size": patch_size or 0, "depth": depth or 0,
            "n_classes": n_classes}


def trained_vit(backbone, img_size, patch_size, depth, n_classes, path):
    """The ViT classifier with its trained weights (sess/vit.pth), checked by load_weights."""
    model = ViTClassifier(backbone, img_size, n_classes, "none", patch_size, depth)
    return load_weights(model, path, weights_meta(backbone, img_size, patch_size, depth, n_classes))

