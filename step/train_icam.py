"""Step train_icam: ICAM (net/icam.py) on image-level labels of --train_list: random long
side in --icam_resize_long (PIL bicubic), flip, colour jitter --icam_color_jitter, crop
--icam_crop_size; loss = (1 - --icam_is_weight) x the GAP logits' multilabel soft margin
+ --icam_is_weight x that of --icam_samples importance-sampled pixels per class (logits
of the sampled softmax values, --icam_sample_eps) + --icam_fsl_weight x the feature-
similarity loss (--icam_fsl_mu, Gaussian --icam_fsl_sigma cells) + --icam_max_weight x
the max-pooled term with background (the reference's PCM-map term); SGD with poly decay,
head (with a bias if --icam_head_bias) at 10x the lr -> sess/icam.pth. --icam_pretrained
cam starts from the trained CAM classifier's trunk (sess/cam.pth, the toy's stand-in for
ImageNet weights)."""
from misc.trainer import poly_lr
from net.icam import icam_loss, make_icam, weights_meta
from pipeline.classifier import train_classifier
from pipeline.registry import output


def run(args):
    def loss(net, b):
        return icam_loss(net(b["img"]), b["label"], b["img"], args.icam_samples,
                         args.icam_is_weight, args.icam_sample_eps, args.icam_fsl_weight,
                         args.icam_fsl_mu, args.icam_fsl_sigma, args.icam_max_weight)
    return train_classifier(
        args, lambda n: make_icam(n, args.cam_backbone, args.icam_pretrained,
                                  output("cam.pth").path(args), args.icam_dropout,
                                  args.icam_head_bias),
        "icam", lambda n: weights_meta(args.cam_backbone, n, args.icam_head_bias),
        lr=args.icam_lr,
        weight_decay=args.icam_weight_decay, momentum=args.icam_momentum,
        epochs=args.icam_epochs, iters=args.icam_iters, batch_size=args.icam_batch_size,
        crop_size=args.icam_crop_size, resize_long=args.icam_resize_long,
        jitter=args.icam_color_jitter, schedule=lambda opt, iters, _: poly_lr(opt, iters),
        loss=loss)
