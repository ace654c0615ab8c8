"""The one CAM file format: `result/<folder>/<id>.npz` holding `keys` (int16, 0-based
foreground class indices), `cam` (K x ceil(H/4) x ceil(W/4), float16, stride 4) and
`high_res` (K x H x W, float16). Written atomically, read with allow_pickle=False."""
import os
import zipfile

import numpy as np

from misc.errors import PipelineError
from misc.fileio import atomic_path


def cam_path(cam_dir, img_id):
    """Where the CAM file of `img_id` lives."""
    return os.path.join(cam_dir, f"{img_id}.npz")


def strided_size(h, w, stride=4):
    """Size of the stride-`stride` grid covering an HxW image."""
    return (h + stride - 1) // stride, (w + stride - 1) // stride


def save_cam(path, keys, cam, high_res):
    """Write one CAM file atomically (a killed run never leaves a truncated .npz)."""
    keys = np.asarray(keys, np.int16)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz"
            np.savez_compressed(f, keys=keys, cam=np.asarray(cam, np.float16),
                                high_res=np.asarray(high_res, np.float16))


def load_cam(path, labels=None, n_classes=None):
    """Read and validate one CAM file; returns dict(keys, cam, high_res) with float32 maps.

    `labels`, when given, are the image's 0-based foreground classes: the file's keys
    must equal them; `n_classes`, when given, bounds the keys. Every problem raises
    PipelineError naming the file and the fix.
    """
    if not os.path.exists(path):
        raise PipelineError(f"{path}: CAM file missing; run the step that makes this folder first")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise PipelineError(f"{path}: holds pickled Python objects, which this pipeline never "
                                f"loads; convert other projects' CAMs with the import_cams step "
                                f"(--trust_pickle) if you trust their source") from e
        raise PipelineError(f"{path}: not a CAM .npz file ({e}); delete it and rerun the step") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise PipelineError(f"{path}: unreadable or truncated CAM file ({e}); "
                            f"delete it and rerun the step") from e
    missing = {"keys", "cam", "high_res"} - set(d)
    if missing:
        raise PipelineError(f"{path}: CAM file lacks {sorted(missing)}; delete it and rerun the step")
    keys = d["keys"].astype(np.int64).ravel()
    cam, high = d["cam"].astype(np.float32), d["high_res"].astype(np.float32)
    if cam.ndim != 3 or high.ndim != 3 or len(cam) != len(keys) or len(high) != len(keys):
        raise PipelineError(f"{path}: CAM shapes {cam.shape}/{high.shape} do not match "
                            f"{len(keys)} keys; delete it and rerun the step")
    if keys.size and (keys.min() < 0 or (n_classes is not None and keys.max() >= n_classes)):
        hi = "" if n_classes is None else f"{n_classes - 1}"
        raise PipelineError(f"{path}: keys {keys.tolist()} outside 0..{hi} "
                            f"(keys are 0-based foreground classes)")
    if not (np.isfinite(cam).all() and np.isfinite(high).all()):
        raise PipelineError(f"{path}: CAM holds NaN or Inf; delete it and rerun the step "
                            f"that wrote it (check that training did not diverge)")
    if labels is not None and sorted(keys.tolist()) != sorted(np.asarray(labels).tolist()):
        raise PipelineError(f"{path}: keys {keys.tolist()} differ from the image's labels "
                            f"{sorted(np.asarray(labels).tolist())}; the CAMs come from another "
                            f"dataset or list: remake them")
    return {"keys": keys, "cam": cam, "high_res": high}


def normalize_max(maps):
    """Each class map (K x ..., torch or numpy) divided by its own max (+1e-5): IRN's
    CAM scaling."""
    if len(maps) == 0:
        return maps
    flat = maps.reshape(len(maps), -1)
    peak = flat.amax(1) if hasattr(flat, "amax") else flat.max(1)
    return maps / (peak.reshape(-1, *[1] * (maps.ndim - 1)) + 1e-5)


def normalize_minmax(maps):
    """Each class map (torch, K x ...) min-max scaled to [0, 1] without an epsilon, as the
    reference scales ViT CAMs on the patch grid; a constant map (0/0 there) becomes 0."""
    flat = maps.flatten(1)
    lo = flat.amin(1).view(-1, *[1] * (maps.dim() - 1))
    span = flat.amax(1).view(-1, *[1] * (maps.dim() - 1)) - lo
    return (maps - lo) / span.clamp(min=1e-30)  # constant map: 0 / 1e-30 = 0


def to_cam_sizes(maps, size, round_up=1):
    """Bilinear resize of K x h x w maps (torch) to the format's two grids: stride 4 and
    full image size. Returns (cam, high_res). With round_up > 1 the full-size map is the
    top-left H x W of a resize to the size rounded up to a multiple of round_up (the
    reference's ResNet rule, round_up 16: it stretches the map by up to 15 pixels)."""
    import torch.nn.functional as F  # local: keeps the numpy-only readers free of torch
    m = maps[None].float()
    if len(maps) == 0:  # an image without labels: empty maps of the right sizes
        return m.new_zeros((0,) + strided_size(*size)), m.new_zeros((0,) + tuple(size))
    up = lambda s: F.interpolate(m, s, mode="bilinear", align_corners=False)[0]  # noqa: E731
    h, w = size
    high = up((-(-h // round_up) * round_up, -(-w // round_up) * round_up))[:, :h, :w]
    return up(strided_size(*size)), high


def downsample_cam(high):
    """The stride-4 grid of a full-size map (K x H x W, torch or numpy) by bilinear
    resize: how the reference derives `cam` from `high_res` after OR/AND, ORANDNet and
    the naive ensemble. Returns (cam, high_res), numpy when given numpy."""
    import torch
    import torch.nn.functional as F
    t = torch.as_tensor(high, dtype=torch.float32)
    low = F.interpolate(t[None], strided_size(*t.shape[1:]), mode="bilinear",
                        align_corners=False)[0] if len(t) else t.new_zeros(
        (0,) + strided_size(*t.shape[1:]))
    return (low.numpy(), high) if isinstance(high, np.ndarray) else (low, high)
