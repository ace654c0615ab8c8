"""Step make_vit_cam: ViT CAMs (transformer attribution or Grad-CAM) of the infer list,
min-max normalised per class -> result/vit_cam/<id>.npz."""
import os

from misc.cam_io import normalize_minmax, to_cam_sizes
from misc.inference import process_images
from misc.torchutils import autocast
from misc.trainer import load_weights
from net.vit_cam import ViTClassifier, vit_cams, weights_meta
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = ViTClassifier(args.vit_backbone, args.vit_img_size, "none", args.vit_patch_size,
                          args.vit_depth)
    meta = weights_meta(args.vit_backbone, args.vit_img_size, args.vit_patch_size, args.vit_depth)
    load_weights(model, os.path.join(args.sess_dir, "vit.pth"), meta)
    model.to(args.device).eval()

    def cams(item):
        x = item["imgs"][0][None].to(args.device, non_blocking=True)
        with autocast(args.device):
            maps = vit_cams(model, x, item["keys"], args.vit_cam_method)
        low, high = to_cam_sizes(maps, item["size"])
        return normalize_minmax(low), normalize_minmax(high)
    return process_images(
        args, "vit_cam", lambda voc, ids: MultiScaleDataset(voc, ids, square=args.vit_img_size),
        cams)
