"""Step train_mct: MCTformer-V2 (net/mctformer.py) on image-level labels of --train_list:
timm's training transform at --mct_img_size (random resized crop of --mct_crop_scale,
flip, RandAugment --mct_randaugment or colour jitter, random erasing --mct_reprob);
multilabel soft-margin loss on the class-token scores plus on the PatchCAM scores; AdamW
at --mct_lr x global batch / 512 (the reference's linear scaling), weight decay
--mct_weight_decay (none on biases, norms and embeddings), warm-up + cosine stepped per
epoch -> sess/mct.pth. --mct_pretrained vit starts from the trained ViT classifier
(sess/vit.pth, the toy's stand-in for ImageNet weights)."""
import torch

from misc.torchutils import dist_env
from misc.trainer import FitConfig, fit, iters_for, warmup_cosine_lr
from net.mctformer import make_mct, weights_meta
from net.vit_cam import trained_vit
from pipeline import dataset
from pipeline.classifier import multilabel_loss
from pipeline.registry import output
from voc12.dataloader import TransformTrainDataset


def run(args):
    import timm.data
    ds = dataset(args)
    ids = ds.ids(args.train_list)
    ds.check_images(ids)
    transform = timm.data.create_transform(
        args.mct_img_size, is_training=True, color_jitter=args.mct_color_jitter,
        auto_augment=args.mct_randaugment or None, interpolation="bicubic",
        re_prob=args.mct_reprob, re_mode="pixel", re_count=1, scale=tuple(args.mct_crop_scale))
    data = TransformTrainDataset(ds, ids, transform, args.seed)
    world = dist_env()[1]
    per_epoch = iters_for(len(ids), 1, args.mct_batch_size, world)
    iters = args.mct_iters or args.mct_epochs * per_epoch
    vit = trained_vit(args.vit_backbone, args.vit_img_size, args.vit_patch_size, args.vit_depth,
                      ds.n_classes, output("vit.pth").path(args)) if args.mct_pretrained == "vit" \
        else None
    model = make_mct(ds.n_classes, args.mct_backbone, args.mct_img_size, args.mct_pretrained,
                     args.mct_patch_size, args.mct_depth, args.mct_drop_path, vit)
    decay, no_decay = model.param_groups()
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.mct_weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.mct_lr * args.mct_batch_size * world / 512, eps=1e-8)
    sched = warmup_cosine_lr(opt, per_epoch, args.mct_epochs, args.mct_warmup_epochs,
                             args.mct_warmup_lr, args.mct_min_lr)
    cfg = FitConfig.from_args(args, name="mct", max_iters=iters, batch_size=args.mct_batch_size,
                              meta=weights_meta(args.mct_backbone, args.mct_img_size,
                                                args.mct_patch_size, args.mct_depth, ds.n_classes))

    def loss(net, b):
        scores, patch_scores = net(b["img"])
        return multilabel_loss(scores, b["label"]) + multilabel_loss(patch_scores, b["label"])
    s = fit(model, opt, sched, data, loss, cfg)
    return (f"{len(ids)} images, {s['iters']} iterations, final loss {s['final_loss']:.4f}, "
            f"{s['images_per_s']:.1f} img/s")
