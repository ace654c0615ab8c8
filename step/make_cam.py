"""Step make_cam: multi-scale + flip ResNet CAMs of the infer list -> result/cam/<id>.npz."""
import os

import torch
from tqdm import tqdm

from misc.cam_io import cam_path, save_cam
from misc.fileio import remove_stale_tmp
from misc.torchutils import autocast, barrier, dist_env, shard
from misc.trainer import load_weights
from net.resnet_cam import CAMNet, multiscale_cams, weights_meta
from voc12.dataloader import VOC, MultiScaleDataset


def run(args):
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.infer_list)
    voc.check_images(ids)
    out = os.path.join(args.result_dir, "cam")
    remove_stale_tmp(out)  # partial files of a killed run
    mine = shard(ids)
    todo = [i for i in mine if not os.path.exists(cam_path(out, i))]  # rerun resumes
    model = CAMNet(args.cam_backbone, "none", args.cam_freeze_bn, args.cam_freeze_stem)
    load_weights(model, os.path.join(args.sess_dir, "cam.pth"), weights_meta(args.cam_backbone))
    model.to(args.device).eval()
    data = MultiScaleDataset(voc, todo, args.cam_scales)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.num_workers)
    for item in tqdm(loader, total=len(data), desc="make_cam", disable=dist_env()[0] != 0):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        with autocast(args.device):
            low, high = multiscale_cams(model, imgs, item["size"], item["keys"])
        save_cam(cam_path(out, item["id"]), item["keys"], low.cpu().numpy(), high.cpu().numpy())
    barrier()
    return f"{len(todo)} images written, {len(mine) - len(todo)} already done -> {out}"
