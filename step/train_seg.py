"""Step train_seg: DeepLab-v1 LargeFOV on the pseudo-masks of --seg_label_dir (or the
ground truth with --seg_label_source gt), 255 ignored, with the scale-scheduled
curriculum of --seg_scale_schedule -> sess/<seg_tag>.pth."""
import os

import torch
import torch.nn.functional as F

from misc.fileio import require_files, result_folder
from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, poly_lr
from net.deeplab import DeepLabLargeFOV, load_cam_trunk, weights_meta
from voc12.dataloader import VOC, LabelTrainDataset, parse_schedule


def run(args):
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.seg_train_list or args.infer_list)
    voc.check_images(ids)
    label_dir = None
    if args.seg_label_source == "gt":
        for i in ids:
            voc.mask(i)  # fail now, naming the first id without a usable mask
    else:
        label_dir = result_folder(args.seg_label_dir, args.result_dir)
        require_files(label_dir, ids, ".png", "pseudo-masks", "make_sem_seg_labels")
    schedule = parse_schedule(args.seg_scale_schedule)
    iters = args.seg_iters or iters_for(len(ids), args.seg_epochs, args.seg_batch_size,
                                        dist_env()[1])
    data = LabelTrainDataset(voc, ids, label_dir, args.seg_crop_size, args.seg_scale_range,
                             args.seed, schedule, iters)
    cam_init = args.seg_pretrained == "cam"
    model = DeepLabLargeFOV(args.seg_backbone, "none" if cam_init else args.seg_pretrained,
                            args.seg_fov, args.seg_width, args.seg_dropout)
    if cam_init:  # toy: the CAM classifier's trunk stands in for ImageNet weights
        load_cam_trunk(model, os.path.join(args.sess_dir, "cam.pth"), args.cam_backbone)
    backbone, head = model.param_groups()
    # DeepLab: the new head learns at 10x the lr of a pretrained backbone; from scratch, one lr
    mult = 1 if args.seg_pretrained == "none" else 10
    groups = [{"params": backbone, "lr": args.seg_lr}, {"params": head, "lr": mult * args.seg_lr}]
    if args.seg_optimizer == "adam":  # toy: a from-scratch net on 100 images learns far faster
        opt = torch.optim.Adam(groups, lr=args.seg_lr, weight_decay=args.seg_weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=args.seg_lr, momentum=args.seg_momentum,
                              weight_decay=args.seg_weight_decay)
    cfg = FitConfig.from_args(args, name=args.seg_tag, max_iters=iters,
                              batch_size=args.seg_batch_size,
                              meta=weights_meta(args.seg_tag, args.seg_backbone, args.seg_fov))
    s = fit(model, opt, poly_lr(opt, iters), data,
            lambda net, b: F.cross_entropy(net(b["img"]), b["label"], ignore_index=255), cfg)
    src = "ground truth" if label_dir is None else label_dir
    return (f"{len(ids)} images ({src}), {s['iters']} iterations, schedule "
            f"{args.seg_scale_schedule}, final loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
