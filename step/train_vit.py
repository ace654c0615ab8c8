"""Step train_vit: the ViT classifier on image-level labels -> sess/vit.pth. With
--vit_lr_schedule epoch_cosine the lr follows the reference's cosine stepped once per
epoch over a horizon of iterations (it stays ~ the base lr); cosine decays it to 0."""
from misc.trainer import cosine_lr
from net.vit_cam import ViTClassifier, weights_meta
from pipeline.classifier import train_classifier


def run(args):
    def model(n):
        return ViTClassifier(args.vit_backbone, args.vit_img_size, n, args.vit_pretrained,
                             args.vit_patch_size, args.vit_depth, args.vit_freeze_patch_embed)

    def meta(n):
        return weights_meta(args.vit_backbone, args.vit_img_size, args.vit_patch_size,
                            args.vit_depth, n)
    return train_classifier(
        args, model, "vit", meta, lr=args.vit_lr, weight_decay=args.vit_weight_decay,
        momentum=args.vit_momentum, epochs=args.vit_epochs, iters=args.vit_iters,
        batch_size=args.vit_batch_size, crop_size=args.vit_img_size,
        resize_long=args.vit_resize_long, jitter=args.vit_color_jitter,
        schedule=lambda opt, iters, per_epoch: cosine_lr(
            opt, iters, per_epoch if args.vit_lr_schedule == "epoch_cosine" else None),
        grad_clip=args.vit_grad_clip)
