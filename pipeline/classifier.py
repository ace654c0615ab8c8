"""What the classifier trainers (train_cam, train_vit, train_vwe, train_icam) share: multilabel
training on image-level labels with SGD, a 10x learning rate on the new head, and the
shared loop."""
import torch
import torch.nn.functional as F

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for
from pipeline import dataset
from voc12.dataloader import TrainDataset


def multilabel_loss(logits, labels):
    """Multilabel soft-margin loss on image-level labels, as in IRN and the reference."""
    return F.multilabel_soft_margin_loss(logits, labels)


def train_classifier(args, make_model, name, meta, *, lr, weight_decay, momentum, epochs, iters,
                     batch_size, crop_size, resize_long, jitter, schedule, grad_clip=0.0,
                     loss=None):
    """Train make_model(n_classes) (with .param_groups() -> (backbone, head)) on
    args.train_list; the model is built after the data checks, so bad data fails before
    any download. meta(n_classes) identifies the weights; schedule(optimizer, max_iters,
    iterations per epoch) -> LR scheduler; loss(net, batch) -> scalar (default: the
    multilabel soft margin of net(img)). Returns the step's summary line."""
    ds = dataset(args)
    ids = ds.ids(args.train_list)
    ds.check_images(ids)
    data = TrainDataset(ds, ids, crop_size, resize_long, args.seed, jitter)
    per_epoch = iters_for(len(data), 1, batch_size, dist_env()[1])
    iters = iters or epochs * per_epoch
    model = make_model(ds.n_classes)
    backbone, head = model.param_groups()
    opt = torch.optim.SGD([{"params": backbone, "lr": lr, "weight_decay": weight_decay},
                           {"params": head, "lr": 10 * lr, "weight_decay": weight_decay}],
                          lr=lr, momentum=momentum)
    cfg = FitConfig.from_args(args, name=name, max_iters=iters, batch_size=batch_size,
                              grad_clip=grad_clip, meta=meta(ds.n_classes))
    s = fit(model, opt, schedule(opt, iters, per_epoch), data,
            loss or (lambda net, b: multilabel_loss(net(b["img"]), b["label"])), cfg)
    return (f"{len(ids)} images, {s['iters']} iterations, final loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
