"""Step make_sem_seg_labels: pseudo-masks by IRN's random walk: boundary map -> affinities
within --walk_radius -> power --beta -> column-normalised sparse transition -> 2^exp_times
steps on the stride-4 CAMs of --sem_seg_cam_dir times (1 - boundary) -> x4 upsampling
-> global max -> background score --sem_seg_bg_thres -> argmax -> result/sem_seg/<id>.png."""
import numpy as np
import torch
import torch.nn.functional as F

from misc.cam_io import cam_path, load_cam
from misc.metrics import cam_to_label
from misc.torchutils import autocast
from net.irn import random_walk, trained_boundary_net, trunk_backbone
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import cam_output, output
from voc12.dataloader import MultiScaleDataset


@torch.no_grad()
def boundary_map(model, img, size4, device):
    """Boundary probabilities (h4, w4) of one image, averaged with its flip."""
    x = img.to(device)[None]
    with autocast(device):
        e = torch.sigmoid(model(torch.cat([x, x.flip(-1)])).float())
    return ((e[0, 0] + e[1, 0].flip(-1)) / 2)[:size4[0], :size4[1]]


def pseudo_mask(rw, keys, size, bg_thres):
    """Walked maps (K,h4,w4) -> label ids (H,W): x4 bilinear, global max, background score."""
    h, w = size
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    up = up / (up.max() + 1e-5)
    return cam_to_label(up.cpu().numpy(), keys, bg_thres)


def run(args):
    trunk_bb = trunk_backbone(args.irn_trunk, args.cam_backbone, args.irn_backbone)
    model = trained_boundary_net(args.irn_trunk, trunk_bb, args.irn_radius,
                                 dataset(args).n_classes, output("irn.pth").path(args))
    model.to(args.device).eval()
    cam_dir = cam_output(args.sem_seg_cam_dir, args).path(args)

    def walk(item):
        c = load_cam(cam_path(cam_dir, item["id"]), item["keys"])
        if len(c["keys"]) == 0:
            return np.zeros(item["size"], np.uint8)
        cams = torch.from_numpy(c["cam"]).to(args.device)
        edge = boundary_map(model, item["imgs"][0], cams.shape[1:], args.device)
        rw = random_walk(cams, edge, args.walk_radius, args.beta, args.exp_times)
        return pseudo_mask(rw, c["keys"], item["size"], args.sem_seg_bg_thres)
    return process_images(args, "sem_seg", lambda ds, ids: MultiScaleDataset(ds, ids), walk,
                          ext=".png")
