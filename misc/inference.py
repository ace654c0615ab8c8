"""What the CAM-making steps share: the infer list, sharding across ranks, skipping
finished images, the loop with its progress bar, and atomic CAM files."""
import os

import torch
from tqdm import tqdm

from misc.cam_io import cam_path, save_cam
from misc.fileio import remove_stale_tmp
from misc.torchutils import barrier, dist_env, shard
from voc12.dataloader import VOC


def make_cam_folder(args, folder, make_dataset, cam_fn):
    """Write result/<folder>/<id>.npz for args.infer_list. make_dataset(voc, ids) gives
    items with id/size/keys; cam_fn(item) -> (cam, high_res) torch maps. Returns a summary."""
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.infer_list)
    voc.check_images(ids)
    out = os.path.join(args.result_dir, folder)
    remove_stale_tmp(out)  # partial files of a killed run
    mine = shard(ids)
    todo = [i for i in mine if not os.path.exists(cam_path(out, i))]  # rerun resumes
    data = make_dataset(voc, todo)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.num_workers)
    for item in tqdm(loader, total=len(data), desc=folder, disable=dist_env()[0] != 0):
        low, high = cam_fn(item)
        save_cam(cam_path(out, item["id"]), item["keys"], low.float().cpu().numpy(),
                 high.float().cpu().numpy())
    barrier()
    return f"{len(todo)} images written, {len(mine) - len(todo)} already done -> {out}"
