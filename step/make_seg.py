"""Step make_seg: segmenter predictions for every split of --seg_splits (e.g. val,test):
multi-scale + flip softmax average, optional dense CRF (--seg_crf), palette PNGs
-> result/<seg_tag>/<split>/<id>.png."""
import os

import torch
import torch.nn.functional as F

from misc.crf import crf_probs
from misc.inference import process_images
from misc.torchutils import autocast
from misc.trainer import load_weights
from net.deeplab import DeepLabLargeFOV, weights_meta
from voc12.dataloader import VOC, MultiScaleDataset


@torch.no_grad()
def seg_probs(model, imgs, size, device):
    """Class probabilities (21,H,W): softmax averaged over scales and flips."""
    total = 0
    for img in imgs:
        x = img.to(device)[None]
        with autocast(device):
            logits = model(torch.cat([x, x.flip(-1)])).float()
        p = F.interpolate(logits.softmax(1), size, mode="bilinear", align_corners=False)
        total = total + p[0] + p[1].flip(-1)
    return total / (2 * len(imgs))


def run(args):
    model = DeepLabLargeFOV(args.seg_backbone, "none", args.seg_fov, args.seg_width)
    load_weights(model, os.path.join(args.sess_dir, f"{args.seg_tag}.pth"),
                 weights_meta(args.seg_tag, args.seg_backbone, args.seg_fov))
    model.to(args.device).eval()

    def predict(item):
        probs = seg_probs(model, item["imgs"], tuple(item["size"]), args.device)
        if args.seg_crf:
            return crf_probs(item["raw"], probs.cpu().numpy())
        return probs.argmax(0)
    out = []
    voc = VOC(args.voc12_root, args.result_dir)
    for split in args.seg_splits.split(","):
        ids = voc.ids(split)
        voc.check_images(ids)
        out.append(f"{split}: " + process_images(
            args, os.path.join(args.seg_tag, split),
            lambda v, todo: MultiScaleDataset(v, todo, args.seg_infer_scales, raw=args.seg_crf),
            predict, ids=ids, ext=".png"))
    return "; ".join(out)
