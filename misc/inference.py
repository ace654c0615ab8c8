"""What the CAM-making steps share: the infer list, sharding across ranks, skipping
finished images, the loop with its progress bar, and atomic CAM files."""
import os

import numpy as np
import torch
from tqdm import tqdm

from misc.cam_io import cam_path, save_cam
from misc.fileio import remove_stale_tmp
from misc.torchutils import barrier, dist_env, shard
from voc12.dataloader import VOC


def _numpy(x):
    return x.float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, np.float32)


def make_cam_folder(args, folders, make_dataset, cam_fn, ids=None):
    """Write result/<folder>/<id>.npz for every folder and every id of args.infer_list
    (or `ids`). make_dataset(voc, ids) gives items with "id" and "keys"; cam_fn(item)
    returns (cam, high_res) for one folder, or {folder: (cam, high_res)} for several
    (torch or numpy). An image is skipped when all its files exist. Returns a summary."""
    one = isinstance(folders, str)
    folders = [folders] if one else list(folders)
    voc = VOC(args.voc12_root, args.result_dir)
    if ids is None:
        ids = voc.ids(args.infer_list)
        voc.check_images(ids)
    outs = [os.path.join(args.result_dir, f) for f in folders]
    for out in outs:
        remove_stale_tmp(out)  # partial files of a killed run
    mine = shard(ids)
    todo = [i for i in mine if not all(os.path.exists(cam_path(o, i)) for o in outs)]
    data = make_dataset(voc, todo)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.num_workers)
    for item in tqdm(loader, total=len(data), desc="+".join(folders), disable=dist_env()[0] != 0):
        maps = cam_fn(item)
        maps = {folders[0]: maps} if one else maps
        for f, out in zip(folders, outs):
            low, high = maps[f]
            save_cam(cam_path(out, item["id"]), item["keys"], _numpy(low), _numpy(high))
    barrier()
    return (f"{len(todo)} images written, {len(mine) - len(todo)} already done -> "
            f"{', '.join(outs)}")
