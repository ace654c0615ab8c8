"""Step make_amn_cam: AMN's maps of the infer list (net/amn.py amn_cams): --cam_scales
(PIL --cam_resample) with flips, the image's labels fed, softmax over background +
classes, min-max per class except where result/amn_label/ says background ->
result/amn_cam/<id>.npz (foreground classes). With --amn_infer_dropout (the paper
preset: the reference's model.eval() never reaches its Dropout) the head's Dropout(0.1)
stays on, seeded per image so that a rerun or another order gives the same maps."""
import os
import zlib

import torch

from misc.imutils import read_label
from net.amn import amn_cams, trained_amn
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output, require
from voc12.dataloader import MultiScaleDataset


def run(args):
    ds = dataset(args)
    labels = output("amn_label")
    require(labels, args, ds.ids(args.infer_list), "labels")
    model = trained_amn(args.cam_backbone, ds.n_classes, output("amn.pth").path(args))
    model.to(args.device).eval()
    model.dropout.train(bool(args.amn_infer_dropout))

    def cams(item):
        torch.manual_seed(zlib.crc32(f"{args.seed}:{item['id']}".encode()))  # the dropout's draws
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        ir = read_label(os.path.join(labels.path(args), f"{item['id']}.png"))
        return amn_cams(model, imgs, item["size"], item["keys"], ir)  # fp32
    return process_images(
        args, "amn_cam",
        lambda ds, ids: MultiScaleDataset(ds, ids, args.cam_scales, resample=args.cam_resample),
        cams)
