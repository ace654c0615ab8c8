"""Step train_cam: the ResNet CAM classifier on image-level labels -> sess/cam.pth."""
from misc.trainer import poly_lr
from net.resnet_cam import CAMNet, weights_meta
from pipeline.classifier import train_classifier


def run(args):
    return train_classifier(
        args, lambda n: CAMNet(n, args.cam_backbone, args.pretrained, args.cam_freeze_bn,
                               args.cam_freeze_stem, args.cam_detach_stage2),
        "cam", lambda n: weights_meta(args.cam_backbone, n), lr=args.cam_lr,
        weight_decay=args.cam_weight_decay, momentum=args.cam_momentum, epochs=args.cam_epochs,
        iters=args.cam_iters, batch_size=args.cam_batch_size, crop_size=args.cam_crop_size,
        resize_long=args.cam_resize_long, jitter=args.cam_color_jitter,
        schedule=lambda opt, iters, _: poly_lr(opt, iters))
