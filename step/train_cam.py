"""Step train_cam: the ResNet CAM classifier on image-level labels -> sess/cam.pth."""
import torch

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, poly_lr
from net.resnet_cam import CAMNet, multilabel_loss, weights_meta
from voc12.dataloader import VOC, TrainDataset


def run(args):
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.train_list)
    voc.check_images(ids)
    data = TrainDataset(voc, ids, args.cam_crop_size, args.cam_resize_long, args.seed)
    model = CAMNet(args.cam_backbone, args.pretrained, args.cam_freeze_bn, args.cam_freeze_stem)
    backbone, head = model.param_groups()
    world = dist_env()[1]
    iters = args.cam_iters or iters_for(len(data), args.cam_epochs, args.cam_batch_size, world)
    wd = args.cam_weight_decay
    opt = torch.optim.SGD([{"params": backbone, "lr": args.cam_lr, "weight_decay": wd},
                           {"params": head, "lr": 10 * args.cam_lr, "weight_decay": wd}],
                          lr=args.cam_lr, momentum=args.cam_momentum)
    cfg = FitConfig(name="cam", sess_dir=args.sess_dir, device=args.device, max_iters=iters,
                    batch_size=args.cam_batch_size, seed=args.seed, num_workers=args.num_workers,
                    ckpt_every=args.ckpt_every, resume=args.resume, compile=args.compile,
                    meta=weights_meta(args.cam_backbone), preset=args.preset)
    s = fit(model, opt, poly_lr(opt, iters), data,
            lambda net, b: multilabel_loss(net(b["img"]), b["label"]), cfg)
    return (f"{len(ids)} images, {s['iters']} iterations, final loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
