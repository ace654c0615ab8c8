"""Step train_vwe: VWE (net/vwe.py) on image-level labels of --train_list: random long
side in --vwe_resize_long (PIL bicubic), flip, crop --vwe_crop_size; the three
multilabel soft-margin losses (HSPP class logits, word-histogram logits, word logits
against the word labels); SGD at --vwe_lr on the trunk and 10x on the new layers (class
head, codebook, the two word maps), weight decay --vwe_weight_decay, momentum
--vwe_momentum, poly decay -> sess/vwe.pth. --vwe_pretrained cam starts from the trained
CAM classifier's trunk (sess/cam.pth, the toy's stand-in for ImageNet weights)."""
from misc.trainer import poly_lr
from net.vwe import make_vwe, vwe_loss, weights_meta
from pipeline.classifier import train_classifier
from pipeline.registry import output


def run(args):
    return train_classifier(
        args, lambda n: make_vwe(n, args.cam_backbone, args.vwe_pretrained, args.vwe_words,
                                 args.vwe_gamma, output("cam.pth").path(args)),
        "vwe", lambda n: weights_meta(args.cam_backbone, n, args.vwe_words), lr=args.vwe_lr,
        weight_decay=args.vwe_weight_decay, momentum=args.vwe_momentum, epochs=args.vwe_epochs,
        iters=args.vwe_iters, batch_size=args.vwe_batch_size, crop_size=args.vwe_crop_size,
        resize_long=args.vwe_resize_long, jitter=args.vwe_color_jitter,
        schedule=lambda opt, iters, _: poly_lr(opt, iters), loss=lambda net, b: vwe_loss(net(b["img"]), b["label"]))
