"""Step make_sem_seg_labels: pseudo-masks by IRN's random walk: boundary map (the image
and its flip zero-padded to --irn_infer_pad, logits averaged) -> affinities within
--walk_radius over --irn_path_cells -> power --beta -> column-normalised sparse
transition -> 2^exp_times steps on the stride-4 CAMs of --sem_seg_cam_dir times
(1 - boundary) -> x4 upsampling -> global max -> background score --sem_seg_bg_thres ->
argmax -> result/sem_seg/<id>.png."""
import numpy as np
import torch
import torch.nn.functional as F

from misc.cam_io import cam_path, load_cam
from misc.metrics import cam_to_label
from net.irn import boundary_map, random_walk, trained_boundary_net, trunk_backbone
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import cam_output, output
from voc12.dataloader import MultiScaleDataset


def pseudo_mask(rw, keys, size, bg_thres):
    """Walked maps (K,h4,w4) -> label ids (H,W): x4 bilinear, divided by the global max (no
    epsilon, as IRN), background score bg_thres, argmax."""
    h, w = size
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    top = up.max()
    up = up / top if top > 0 else up  # all-zero maps: every pixel background
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
        cams = torch.from_numpy(c["cam"]).to(args.device).float()
        edge = boundary_map(model, item["imgs"][0].to(args.device), args.irn_infer_pad)
        rw = random_walk(cams, edge, args.walk_radius, args.beta, args.exp_times,
                         args.irn_path_cells)
        return pseudo_mask(rw, c["keys"], item["size"], args.sem_seg_bg_thres)
    return process_images(args, "sem_seg", lambda ds, ids: MultiScaleDataset(ds, ids), walk,
                          ext=".png")
