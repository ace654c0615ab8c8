"""What the per-image steps share: the infer list, sharding across ranks, skipping
finished images, the loop with its progress bar, CPU post-processing in a process pool,
and atomic outputs (CAM .npz files or label PNGs)."""
import collections
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from misc.cam_io import cam_path, save_cam
from misc.fileio import remove_stale_tmp
from misc.imutils import save_label_png
from misc.torchutils import barrier, dist_env, shard
from pipeline import dataset


def _numpy(x):
    return x.float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, np.float32)


def out_path(folder, img_id, ext):
    return os.path.join(folder, f"{img_id}{ext}")


def process_images(args, folders, make_dataset, cam_fn, ids=None, ext=".npz", post=None):
    """Write result/<folder>/<id><ext> for every folder and every id of args.infer_list
    (or `ids`). make_dataset(ds, ids) gives items with "id" (and "keys" for .npz);
    cam_fn(item) returns, for one folder, (cam, high_res) maps (.npz, torch or numpy) or
    an HxW label map (.png), or {folder: that} for several. An image is skipped when all
    its files exist. Heavy per-image work can run in make_dataset's __getitem__: it is
    spread over --num_workers processes. With `post` (a top-level function, CPU only, one
    folder), cam_fn returns post's arguments and post runs in --num_workers processes
    (e.g. the dense CRF after the network), so the device does not wait for the CPU.
    Returns a summary."""
    one = isinstance(folders, str)
    folders = [folders] if one else list(folders)
    ds = dataset(args)
    if ids is None:
        ids = ds.ids(args.infer_list)
        ds.check_images(ids)
    outs = [os.path.join(args.result_dir, f) for f in folders]
    for out in outs:
        remove_stale_tmp(out)  # partial files of a killed run
    mine = shard(ids)
    todo = [i for i in mine if not all(os.path.exists(out_path(o, i, ext)) for o in outs)]
    data = make_dataset(ds, todo)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.num_workers)

    def write(item, maps):
        maps = {folders[0]: maps} if one else maps
        for f, out in zip(folders, outs):
            if ext == ".png":
                save_label_png(out_path(out, item["id"], ext), _numpy(maps[f]).astype(np.uint8))
            else:
                low, high = maps[f]
                save_cam(cam_path(out, item["id"]), item["keys"], _numpy(low), _numpy(high))
    # spawn, not fork: the parent may hold a CUDA context
    pool = ProcessPoolExecutor(args.num_workers, multiprocessing.get_context("spawn")) \
        if post is not None and args.num_workers > 0 and todo else None
    pending = collections.deque()
    try:
        for item in tqdm(loader, total=len(data), desc="+".join(folders),
                         disable=dist_env()[0] != 0):
            maps = cam_fn(item)
            if post is None:
                write(item, maps)
            elif pool is None:
                write(item, post(*maps))
            else:
                meta = {k: item[k] for k in ("id", "keys") if k in item}
                pending.append((meta, pool.submit(post, *maps)))
                while pending and (pending[0][1].done() or len(pending) > 2 * args.num_workers):
                    meta, job = pending.popleft()
                    write(meta, job.result())
        while pending:
            meta, job = pending.popleft()
            write(meta, job.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    barrier()
    return (f"{len(todo)} images written, {len(mine) - len(todo)} already done -> "
            f"{', '.join(outs)}")
