"""Step train_seg: DeepLab-v1 LargeFOV on the pseudo-masks of --seg_label_dir (or the
ground truth with --seg_label_source gt), 255 ignored, with the scale-scheduled
curriculum of --seg_scale_schedule (with --seg_scale_crop, the crop shrinks with the scale)
-> sess/<seg_tag>.pth."""
import torch
import torch.nn.functional as F

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, poly_lr
from net.deeplab import DeepLabLargeFOV, load_cam_trunk, weights_meta
from pipeline import dataset
from pipeline.registry import output, require, resolve
from voc12.dataloader import LabelTrainDataset, parse_schedule


def run(args):
    ds = dataset(args)
    ids = ds.ids(args.seg_train_list or args.infer_list)
    ds.check_images(ids)
    label_dir = None
    if args.seg_label_source == "gt":
        for i in ids:
            ds.mask(i)  # fail now, naming the first id without a usable mask
    else:
        [labels] = resolve("--seg_label_dir", args)
        require(labels, args, ids, "pseudo-masks")
        label_dir = labels.path(args)
    schedule = parse_schedule(args.seg_scale_schedule)
    iters = args.seg_iters or iters_for(len(ids), args.seg_epochs, args.seg_batch_size,
                                        dist_env()[1])
    data = LabelTrainDataset(ds, ids, label_dir, args.seg_crop_size, args.seg_scale_range,
                             args.seed, schedule, iters, scale_crop=args.seg_scale_crop)
    cam_init = args.seg_pretrained == "cam"
    n_labels = ds.n_classes + 1
    model = DeepLabLargeFOV(n_labels, args.seg_backbone, "none" if cam_init else args.seg_pretrained,
                            args.seg_fov, args.seg_width, args.seg_dropout)
    if cam_init:  # toy: the CAM classifier's trunk stands in for ImageNet weights
        load_cam_trunk(model, output("cam.pth").path(args), args.cam_backbone)
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
                              meta=weights_meta(args.seg_tag, args.seg_backbone, args.seg_fov, n_labels))
    s = fit(model, opt, poly_lr(opt, iters), data,
            lambda net, b: F.cross_entropy(net(b["img"]), b["label"], ignore_index=255), cfg)
    src = "ground truth" if label_dir is None else label_dir
    return (f"{len(ids)} images ({src}), {s['iters']} iterations, schedule "
            f"{args.seg_scale_schedule}, final loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
