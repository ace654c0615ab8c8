"""Step make_cam: multi-scale + flip ResNet CAMs of the infer list -> result/cam/<id>.npz."""
import os

from misc.inference import process_images
from misc.torchutils import autocast
from misc.trainer import load_weights
from net.resnet_cam import CAMNet, multiscale_cams, weights_meta
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = CAMNet(args.cam_backbone, "none", args.cam_freeze_bn, args.cam_freeze_stem)
    load_weights(model, os.path.join(args.sess_dir, "cam.pth"), weights_meta(args.cam_backbone))
    model.to(args.device).eval()

    def cams(item):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        with autocast(args.device):
            return multiscale_cams(model, imgs, item["size"], item["keys"])
    return process_images(args, "cam", lambda voc, ids: MultiScaleDataset(voc, ids, args.cam_scales),
                           cams)
