"""Step train_amn: AMN (net/amn.py) on the confident labels of the ResNet CAMs
(result/amn_label/) of the --infer_list images (the images that have them; AMN trains on
train_aug, as the paper preset's --infer_list): random rescale in --amn_scale_range (PIL
bicubic image, nearest labels), flip, crop --amn_crop_size; the PCL loss (soft targets,
--amn_eps) against the labels shrunk to the logit grid by nearest sampling; Adam with
--amn_lr on the trunk and --amn_head_lr on the label encoder and head, weight decay
--amn_weight_decay, no schedule -> sess/amn.pth."""
import torch

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for
from net.amn import make_amn, pcl_loss, resize_labels, weights_meta
from pipeline import dataset
from pipeline.registry import output, require
from voc12.dataloader import LabelTrainDataset


def run(args):
    ds = dataset(args)
    ids = ds.ids(args.infer_list)
    labels = output("amn_label")
    require(labels, args, ids, "labels")
    data = LabelTrainDataset(ds, ids, labels.path(args), args.amn_crop_size, args.amn_scale_range,
                             seed=args.seed, resample="pil", classes=True)
    model = make_amn(ds.n_classes, args.cam_backbone, args.amn_pretrained,
                     output("cam.pth").path(args))
    trunk, new = model.param_groups()
    opt = torch.optim.Adam([{"params": trunk, "lr": args.amn_lr},
                            {"params": new, "lr": args.amn_head_lr}],
                           weight_decay=args.amn_weight_decay)
    iters = args.amn_iters or iters_for(len(ids), args.amn_epochs, args.amn_batch_size,
                                        dist_env()[1])
    cfg = FitConfig.from_args(args, name="amn", max_iters=iters, batch_size=args.amn_batch_size,
                              meta=weights_meta(args.cam_backbone, ds.n_classes))

    def loss(net, b):
        logits = net(b["img"], b["classes"])
        return pcl_loss(logits, resize_labels(b["label"], logits.shape[-2:]), args.amn_eps)
    s = fit(model, opt, torch.optim.lr_scheduler.ConstantLR(opt, 1.0, 0), data, loss, cfg)
    return (f"{len(ids)} images, {s['iters']} iterations, PCL loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
