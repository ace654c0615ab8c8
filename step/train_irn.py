"""Step train_irn: IRN's class-boundary branch on a frozen trunk, from inter-pixel pair
labels of result/ir_label/ within --irn_radius -> sess/irn.pth."""
import torch

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, poly_lr
from net.irn import BoundaryNet, affinity_loss, make_trunk, trunk_backbone, weights_meta
from pipeline import dataset
from pipeline.registry import output, require
from voc12.dataloader import LabelTrainDataset


def run(args):
    ds = dataset(args)
    ids = ds.ids(args.infer_list)
    labels = output("ir_label")
    require(labels, args, ids, "labels")
    backbone = trunk_backbone(args.irn_trunk, args.cam_backbone, args.irn_backbone)
    trunk = make_trunk(args.irn_trunk, backbone, ds.n_classes, output("cam.pth").path(args))
    model = BoundaryNet(trunk)
    data = LabelTrainDataset(ds, ids, labels.path(args), args.irn_crop_size, seed=args.seed)
    iters = args.irn_iters or iters_for(len(ids), args.irn_epochs, args.irn_batch_size,
                                        dist_env()[1])
    opt = torch.optim.SGD(model.param_groups(), lr=args.irn_lr, momentum=args.irn_momentum,
                          weight_decay=args.irn_weight_decay)
    cfg = FitConfig.from_args(args, name="irn", max_iters=iters, batch_size=args.irn_batch_size,
                              meta=weights_meta(args.irn_trunk, backbone, args.irn_radius,
                                                ds.n_classes))

    def loss(net, b):  # labels at the stride-4 grid of the boundary map
        return affinity_loss(net(b["img"]), b["label"][:, ::4, ::4], args.irn_radius)
    s = fit(model, opt, poly_lr(opt, iters), data, loss, cfg)
    return f"{len(ids)} images, {s['iters']} iterations, affinity loss {s['final_loss']:.4f}"
