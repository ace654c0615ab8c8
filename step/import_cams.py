"""Step import_cams: converts other projects' CAM files (IRN/AMN `{'keys','cam','high_res'}`
or MCTformer `{class: map}` dicts saved with np.save) into the common format
-> result/<import_name>/<id>.npz. Those files are pickles: loading one can run arbitrary
code, so the step reads them only with --trust_pickle. The folder gets a source.json
(title, threshold, offset), which registers it as a CAM source: --orand_sources, the
evaluations, the summary and the figures take it by name. Without --import_dir: nothing
to do."""
import json
import os

import numpy as np
from tqdm import tqdm

from misc.cam_io import cam_path, save_cam, to_cam_sizes
from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.imutils import image_size
from pipeline import dataset
from pipeline.registry import SOURCE_FILE, parse_offset, registered


def read_foreign(path, fmt):
    """(keys, high_res) of one foreign file; only ever called after --trust_pickle."""
    import torch  # IRN stores torch tensors inside the pickle
    try:
        d = np.load(path, allow_pickle=True).item()
    except Exception as e:
        raise PipelineError(f"{path}: not an np.save'd dict ({type(e).__name__}: {e})") from e
    as_np = lambda v: v.float().numpy() if torch.is_tensor(v) else np.asarray(v, np.float32)  # noqa
    if fmt == "irn":
        if not {"keys", "high_res"} <= set(d):
            raise PipelineError(f"{path}: IRN/AMN layout needs 'keys' and 'high_res'; "
                                f"found {sorted(d)} (try --import_format mctformer)")
        keys = np.asarray(d["keys"]).astype(np.int64).ravel()
        high = as_np(d["high_res"])
        if len(high) == len(keys) + 1:  # AMN: background is the first channel
            high = high[1:]
    elif fmt == "mctformer":
        if not d or not all(isinstance(k, (int, np.integer)) for k in d):
            raise PipelineError(f"{path}: MCTformer layout is {{class index: map}}; found keys "
                                f"{list(d)[:5]} (try --import_format irn)")
        keys = np.array(sorted(int(k) for k in d), np.int64)
        high = np.stack([as_np(d[k]) for k in sorted(d)])
    else:
        raise PipelineError(f"--import_format {fmt}: expected irn or mctformer")
    if high.ndim != 3 or len(high) != len(keys):
        raise PipelineError(f"{path}: {len(keys)} keys but maps of shape {high.shape}")
    if not np.isfinite(high).all():
        raise PipelineError(f"{path}: maps hold NaN or Inf; fix the source CAMs")
    return keys, high


def run(args):
    if not args.import_dir:
        return "nothing to import (no --import_dir)"
    src = args.import_dir
    offset = parse_offset(args.import_offset, "--import_offset")  # before any file is written
    files = sorted(f for f in os.listdir(src) if f.endswith(".npy")) if os.path.isdir(src) else []
    if not files:
        raise PipelineError(f"{src}: no .npy CAM files found; pass the folder of the other "
                            f"project's CAMs as --import_dir")
    if not args.trust_pickle:
        raise PipelineError(
            f"{src}: these CAM files are pickled Python objects, and loading a pickle can run "
            f"arbitrary code. If you trust their source, rerun with --trust_pickle; they are "
            f"converted once into pickle-free .npz files")
    if registered(args.import_name):
        raise PipelineError(f"--import_name {args.import_name}: a folder this pipeline makes; "
                            f"pick another name")
    ds = dataset(args)
    out = os.path.join(args.result_dir, args.import_name)
    ids = [f[:-4] for f in files]
    labels = ds.labels(ids)
    import torch
    for img_id, f in tqdm(list(zip(ids, files)), desc="import_cams"):
        keys, high = read_foreign(os.path.join(src, f), args.import_format)
        if sorted(keys.tolist()) != labels[img_id].tolist():
            raise PipelineError(f"{os.path.join(src, f)}: classes {keys.tolist()} differ from "
                                f"the image's labels {labels[img_id].tolist()} (0-based "
                                f"foreground indices expected)")
        size = image_size(ds.image_path(img_id))
        if high.shape[1:] != size:
            raise PipelineError(f"{os.path.join(src, f)}: maps of size {high.shape[1:]} but the "
                                f"image is {size}; import full-resolution maps")
        low, _ = to_cam_sizes(torch.from_numpy(high), size)
        save_cam(cam_path(out, img_id), keys, low.numpy(), high)
    manifest = {"title": args.import_title or args.import_name, "format": args.import_format,
                "threshold": args.orand_eval_thres if args.import_thres is None else args.import_thres,
                "offset": offset, "from": os.path.abspath(src)}
    with atomic_path(os.path.join(out, SOURCE_FILE)) as tmp, open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    return (f"{len(files)} files converted from {src} ({args.import_format}) -> {out}, "
            f"registered as source '{args.import_name}'")
