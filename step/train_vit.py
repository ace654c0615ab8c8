"""Step train_vit: the ViT classifier on image-level labels -> sess/vit.pth."""
from misc.trainer import cosine_lr
from net.vit_cam import ViTClassifier, weights_meta
from pipeline.classifier import train_classifier


def run(args):
    def model(n):
        return ViTClassifier(args.vit_backbone, args.vit_img_size, n, args.vit_pretrained,
                             args.vit_patch_size, args.vit_depth)

    def meta(n):
        return weights_meta(args.vit_backbone, args.vit_img_size, args.vit_patch_size,
                            args.vit_depth, n)
    return train_classifier(
        args, model, "vit", meta, lr=args.vit_lr, weight_decay=args.vit_weight_decay,
        momentum=args.vit_momentum, epochs=args.vit_epochs, iters=args.vit_iters,
        batch_size=args.vit_batch_size, crop_size=args.vit_img_size,
        resize_long=args.vit_resize_long, schedule=cosine_lr, grad_clip=args.vit_grad_clip)
