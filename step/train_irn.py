"""Step train_irn: IRN's class-boundary branch on a frozen trunk, from inter-pixel pair
labels of result/ir_label/ within --irn_radius (crops rescaled in --irn_scale_range,
labels sampled at pixel 4i+2 of the stride-4 grid, pair sources per --irn_pair_region,
paths per --irn_path_cells) -> sess/irn.pth."""
import torch

from misc.errors import PipelineError
from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, poly_lr
from net.irn import (BoundaryNet, affinity_loss, make_trunk, stride4_labels, trunk_backbone,
                     weights_meta)
from pipeline import dataset
from pipeline.registry import output, require
from voc12.dataloader import LabelTrainDataset


def run(args):
    if args.irn_crop_size % 4:
        raise PipelineError(f"--irn_crop_size {args.irn_crop_size}: must be a multiple of 4 "
                            f"(the boundary map and its labels are on the stride-4 grid)")
    ds = dataset(args)
    ids = ds.ids(args.infer_list)
    labels = output("ir_label")
    require(labels, args, ids, "labels")
    backbone = trunk_backbone(args.irn_trunk, args.cam_backbone, args.irn_backbone)
    trunk = make_trunk(args.irn_trunk, backbone, ds.n_classes, output("cam.pth").path(args))
    model = BoundaryNet(trunk)
    data = LabelTrainDataset(ds, ids, labels.path(args), args.irn_crop_size,
                             scale_range=args.irn_scale_range, seed=args.seed)
    iters = args.irn_iters or iters_for(len(ids), args.irn_epochs, args.irn_batch_size,
                                        dist_env()[1])
    opt = torch.optim.SGD(model.param_groups(), lr=args.irn_lr, momentum=args.irn_momentum,
                          weight_decay=args.irn_weight_decay)
    cfg = FitConfig.from_args(args, name="irn", max_iters=iters, batch_size=args.irn_batch_size,
                              meta=weights_meta(args.irn_trunk, backbone, args.irn_radius,
                                                ds.n_classes))

    def loss(net, b):
        return affinity_loss(net(b["img"]), stride4_labels(b["label"]), args.irn_radius,
                             args.irn_path_cells, args.irn_pair_region)
    s = fit(model, opt, poly_lr(opt, iters), data, loss, cfg)
    return f"{len(ids)} images, {s['iters']} iterations, affinity loss {s['final_loss']:.4f}"
