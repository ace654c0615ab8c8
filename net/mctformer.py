"""MCTformer-V2 (Xu et al., CVPR 2022; reference: xulianuwa/MCTformer before MCTformer+):
a timm DeiT with one class token per class, position embeddings resized to any input,
class scores = mean over channels of each class token's final output (no final norm),
and a PatchCAM head (3x3 conv on the patch tokens, global average as a second score).
Its CAMs fuse the class-to-patch attention of the last blocks with ReLU(PatchCAM) and
refine them by the patch-to-patch attention of every block (docs/FIDELITY.md,
"MCTformer"). timm's modules are reused; the attention maps are read by vit_cam's
functional block replay."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import PipelineError
from misc.weights import load_weights
from net.backbones import load_backbone_file
from net.vit_cam import _check_plain_blocks, tape_block


def resize_pos_embed(pos, n_tokens, rows, cols, square):
    """MCTformer's position embeddings (1, n_tokens + N, D) for a rows x cols patch grid:
    unchanged when the grid has the N patches of training and the image is square
    (`square`), else the patch part is resized by bicubic interpolation with the scale
    factor (rows + 0.1) / sqrt(N), (cols + 0.1) / sqrt(N) (DINO's rule, align_corners
    False: the 0.1 enters the sampling positions too); class-token embeddings unchanged."""
    n = pos.shape[1] - n_tokens
    if n == rows * cols and square:
        return pos
    side = math.isqrt(n)
    grid = pos[:, n_tokens:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                         mode="bicubic")
    if grid.shape[-2:] != (rows, cols):
        raise PipelineError(f"position embeddings resized to {tuple(grid.shape[-2:])}, "
                            f"expected {(rows, cols)}")
    return torch.cat([pos[:, :n_tokens], grid.flatten(2).transpose(1, 2)], 1)


def from_single_token(state, n_tokens, grid):
    """A one-class-token ViT state (timm/DeiT layout) -> MCTformer's: the class token and
    its position embedding repeated n_tokens times, the patch position embeddings resized
    to `grid` by bicubic interpolation (align_corners False), as MCTformer's --finetune
    does; the final norm and the head are dropped."""
    if "cls_token" not in state or "pos_embed" not in state:
        raise PipelineError("--mct_pretrained: no cls_token / pos_embed; expected the weights "
                            "of a one-class-token ViT/DeiT (timm layout)")
    cls, pos = state["cls_token"], state["pos_embed"]
    if cls.shape[1] != 1:
        raise PipelineError(f"--mct_pretrained: {cls.shape[1]} class tokens; expected the "
                            f"weights of a one-class-token ViT/DeiT")
    side = math.isqrt(pos.shape[1] - 1)
    patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False)
    out = {"cls_tokens": cls.repeat(1, n_tokens, 1),
           "pos_embed": torch.cat([pos[:, :1].repeat(1, n_tokens, 1),
                                   patches.flatten(2).transpose(1, 2).to(pos.dtype)], 1)}
    out.update({f"vit.{k}": v for k, v in state.items()
                if k.startswith(("patch_embed.", "blocks."))})
    return out


class MCTformer(nn.Module):
    """MCTformer-V2 on a timm ViT/DeiT (its patch embedding and blocks; its class token,
    position embedding, final norm and head are replaced)."""

    def __init__(self, name, img_size, n_classes, pretrained="none", patch_size=None,
                 depth=None, drop_path=0.1):
        super().__init__()
        import timm
        if not timm.is_model(name):
            raise PipelineError(f"--mct_backbone '{name}' is not a timm model")
        kw = dict(img_size=img_size, num_classes=0, global_pool="", class_token=False,
                  pos_embed="none", final_norm=False, drop_path_rate=drop_path)
        kw.update({k: v for k, v in (("patch_size", patch_size), ("depth", depth)) if v})
        try:
            self.vit = timm.create_model(name, pretrained=False, **kw)
        except TypeError as e:
            raise PipelineError(f"--mct_backbone '{name}' is not a plain ViT/DeiT ({e})") from e
        d, grid = self.vit.embed_dim, tuple(self.vit.patch_embed.grid_size)
        self.n_classes, self.patch = n_classes, self.vit.patch_embed.patch_size[0]
        self.cls_tokens = nn.Parameter(torch.zeros(1, n_classes, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_classes + grid[0] * grid[1], d))
        nn.init.trunc_normal_(self.cls_tokens, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.head = nn.Conv2d(d, n_classes, 3, padding=1)  # PyTorch's default init (as MCT)
        if pretrained == "imagenet":
            try:
                state = timm.create_model(name, pretrained=True, **{
                    k: v for k, v in kw.items() if k in ("patch_size", "depth")}).state_dict()
            except Exception as e:  # hub failures: OSError, HTTP errors, ...
                raise PipelineError(
                    f"could not load ImageNet weights for '{name}' ({type(e).__name__}: "
                    f"{str(e)[:200]}). Download them on a machine with internet and pass "
                    f"--mct_pretrained /path/to/file (.pth or .safetensors)") from e
            self.load_single_token(state, f"ImageNet weights of '{name}'")
        elif pretrained != "none":  # a file: a one-class-token ViT/DeiT of this backbone
            load_backbone_file(self, pretrained, "--mct_pretrained", ("head.",),
                               lambda s, m: from_single_token(s, n_classes, grid))

    def load_single_token(self, state, what):
        """Initialise from a one-class-token ViT's state (timm layout): from_single_token;
        everything but the PatchCAM head must fit."""
        grid = tuple(self.vit.patch_embed.grid_size)
        own = self.state_dict()
        state = from_single_token(state, self.n_classes, grid)
        bad = sorted(k for k in state if k not in own or own[k].shape != state[k].shape)
        missing = sorted(k for k in own if k not in state and not k.startswith("head."))
        if bad or missing:
            raise PipelineError(f"{what} do not fit this MCTformer (missing {missing[:3]}, "
                                f"unexpected or misshapen {bad[:3]}); pass the weights of "
                                f"the same ViT/DeiT")
        self.load_state_dict(state, strict=False)

    def grid(self, h, w):
        """(rows, cols) of the patch grid of an h x w input (the conv drops remainders)."""
        return h // self.patch, w // self.patch

    def tokens(self, x):
        """Class tokens + patch tokens with position embeddings, for any input size."""
        rows, cols = self.grid(*x.shape[-2:])
        p = self.vit.patch_embed
        t = p.norm(p.proj(x).flatten(2).transpose(1, 2))
        t = torch.cat([self.cls_tokens.expand(len(x), -1, -1), t], 1)
        pos = resize_pos_embed(self.pos_embed, self.n_classes, rows, cols,
                               x.shape[-2] == x.shape[-1])
        return self.vit.pos_drop(t + pos)

    def _heads(self, t, rows, cols):
        """(class scores, PatchCAM maps) from the final tokens: mean over channels of each
        class token; the 3x3 conv on the patch tokens."""
        c = self.n_classes
        patch = t[:, c:].transpose(1, 2).reshape(len(t), -1, rows, cols)
        return t[:, :c].mean(-1), self.head(patch)

    def forward(self, x):
        """(class-token scores, PatchCAM scores), each (B, n_classes): both are trained."""
        t = self.tokens(x)
        for b in self.vit.blocks:
            t = b(t)
        scores, maps = self._heads(t, *self.grid(*x.shape[-2:]))
        return scores, maps.mean((2, 3))

    def param_groups(self):
        """(decayed, not decayed): as timm's optimiser factory, biases, norms (every
        parameter of at most one dimension) and the token / position embeddings get no
        weight decay."""
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if p.requires_grad:
                skip = p.ndim <= 1 or n.endswith(".bias") or n in ("cls_tokens", "pos_embed")
                (no_decay if skip else decay).append(p)
        return decay, no_decay


@torch.no_grad()
def attention_maps(model, x):
    """One forward of x (B,3,H,W) in eval mode: (class-token scores, PatchCAM maps
    (B,C,rows,cols), per block the attention averaged over heads (B, T, T))."""
    _check_plain_blocks(model.vit)
    rows, cols = model.grid(*x.shape[-2:])
    t, attn = model.tokens(x), []
    for b in model.vit.blocks:
        tape = tape_block(b, t)
        t = tape["out"]
        attn.append(tape["attn"].mean(1))
    scores, maps = model._heads(t, rows, cols)
    return scores, maps, attn


def fused_maps(maps, attn, n_classes, layers=3, refine=True):
    """MCTformer-V2's maps (B, C, rows, cols): the class-to-patch attention summed over the
    last `layers` blocks times ReLU(PatchCAM maps); with `refine`, then multiplied by the
    patch-to-patch attention summed over all blocks (each patch gathers the maps of the
    patches it attends to)."""
    b, c, rows, cols = maps.shape
    cls2patch = torch.stack(attn[-layers:]).sum(0)[:, :n_classes, n_classes:]
    cams = cls2patch.reshape(b, c, rows, cols) * F.relu(maps)
    if refine:
        p2p = torch.stack(attn).sum(0)[:, n_classes:, n_classes:]  # (B, P, P)
        cams = (p2p[:, None] @ cams.reshape(b, c, -1, 1)).reshape(b, c, rows, cols)
    return cams


@torch.no_grad()
def mct_cams(model, img, keys, layers=3, refine=True):
    """Full-size maps (K, H, W) of the classes `keys` for one image (3,H,W) at its own
    resolution: the fused maps of the image and of its flip (flipped back), each resized
    bilinearly to H x W and masked by the image's labels, summed; then per class min-max
    scaled with +1e-8 in the denominator. Runs in fp32."""
    h, w = img.shape[-2:]
    keys = torch.as_tensor(keys, dtype=torch.long, device=img.device)
    if len(keys) == 0:  # an image without labels: no maps
        return img.new_zeros((0, h, w))
    x = torch.stack([img, img.flip(-1)]).float()
    _, maps, attn = attention_maps(model, x)
    cams = F.interpolate(fused_maps(maps, attn, model.n_classes, layers, refine), (h, w),
                         mode="bilinear", align_corners=False)
    cams = (cams[0] + cams[1].flip(-1))[keys]  # the label mask: only labelled classes kept
    flat = cams.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return (cams - lo) / (hi - lo + 1e-8)


def make_mct(n_classes, backbone, img_size, pretrained, patch_size=None, depth=None,
             drop_path=0.1, vit=None):
    """A new MCTformer to train. pretrained: imagenet | none | a weights file, or 'vit': the
    trained ViT classifier (vit: its ViTClassifier, from sess/vit.pth; the toy's stand-in
    for ImageNet weights), converted as ImageNet's DeiT is (class token repeated)."""
    model = MCTformer(backbone, img_size, n_classes, "none" if pretrained == "vit" else pretrained,
                      patch_size, depth, drop_path)
    if pretrained == "vit":
        model.load_single_token(vit.vit.state_dict(), "the ViT classifier's weights (sess/vit.pth)")
    return model


def weights_meta(backbone, img_size, patch_size, depth, n_classes):
    """What identifies MCTformer's saved weights (checked when loading them)."""
    return {"step": "train_mct", "arch": "MCTformerV2", "backbone": backbone,
            "img_size": img_size, "patch_size": patch_size or 0, "depth": depth or 0,
            "n_classes": n_classes}


def trained_mct(backbone, img_size, patch_size, depth, n_classes, path):
    """MCTformer with its trained weights (sess/mct.pth), checked by load_weights."""
    model = MCTformer(backbone, img_size, n_classes, "none", patch_size, depth)
    return load_weights(model, path, weights_meta(backbone, img_size, patch_size, depth,
                                                  n_classes))
