"""Step train_orandnet: the OR->AND network on (OR, AND) map pairs of the infer list,
one image per iteration with all its class maps in one batch -> sess/orandnet.pth."""
import torch

from misc.trainer import FitConfig, fit, poly_lr
from net.orandnet import build_orandnet, orand_loss, weights_meta
from pipeline import dataset
from pipeline.camdata import OrAndPairs
from pipeline.registry import output, require


def run(args):
    ds = dataset(args)
    ids = [i for i, k in ds.labels(ds.ids(args.infer_list)).items() if len(k)]
    or_out, and_out = output("or_cam"), output("and_cam")
    require(and_out, args, ids, "OR/AND files")
    model = build_orandnet(args.orand_net, args.orand_pretrained, args.orand_fcn)
    opt = torch.optim.SGD(model.parameters(), lr=args.orand_lr, momentum=args.orand_momentum,
                          weight_decay=args.orand_weight_decay)
    cfg = FitConfig.from_args(args, name="orandnet", max_iters=args.orand_iters, batch_size=1,
                              meta=weights_meta(args.orand_net, args.orand_loss, args.orand_fcn))

    def loss(net, b):  # one image: its K class maps are the batch
        return orand_loss(net(b["or"][0][:, None]), b["and"][0], args.orand_loss)
    data = OrAndPairs(ds, ids, or_out.path(args), and_out.path(args))
    s = fit(model, opt, poly_lr(opt, args.orand_iters), data, loss, cfg)
    return (f"{len(ids)} images, {s['iters']} iterations, {args.orand_loss} loss "
            f"{s['first_loss']:.4f} -> {s['final_loss']:.4f}")
