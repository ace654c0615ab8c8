"""Presets: every hyper-parameter of a preset in one visible place. A flag given on the
command line overrides its preset value. `paper` reproduces the reference
implementation on real VOC with a GPU (docs/FIDELITY.md says where each value comes
from); `toy` overrides what must differ to run the whole pipeline on the generated
toy VOC on 2 CPU cores; `paper_coco` and `toy_coco` are their MS COCO 2014 variants
(overrides only, each with where it comes from). `paper_amn_mct` and `toy_amn_mct` run
the paper's second row: ORANDNet over AMN and MCTformer CAMs. A preset also chooses the
steps a run without --steps makes."""
from pipeline.registry import STEP_NAMES

SECOND_ROW = ("cam_to_amn_label", "train_amn", "make_amn_cam", "eval_amn_cam", "train_mct",
              "make_mct_cam", "eval_mct_cam")
VIT = ("train_vit", "make_vit_cam", "eval_vit_cam")
VWE = ("train_vwe", "make_vwe_cam", "eval_vwe_cam")  # a CAM source of its own, run by --steps
# ICAM, a CAM source of its own (not part of the paper's rows): run with --steps or
# --orand_sources icam_cam,...
ICAM = ("train_icam", "make_icam_cam", "eval_icam_cam")


def _steps_but(skip):
    return ",".join(s for s in STEP_NAMES if s not in skip)


PAPER = dict(
    # ResNet-50 + ViT CAMs -> ORANDNet -> IRN -> segmenter: every step but AMN's,
    # MCTformer's, VWE's and ICAM's
    steps=_steps_but(SECOND_ROW + VWE + ICAM),
    # CAMs and pseudo-masks for all of train_aug (the segmenter's training set, as in
    # IRN), scored on VOC train as in the paper
    dataset="auto", train_list="train_aug", infer_list="train_aug", eval_list="train",
    num_workers=8,
    # ResNet-50 CAM classifier (docs/FIDELITY.md, "ResNet classifier")
    cam_backbone="resnet50", pretrained="imagenet", cam_freeze_bn=True, cam_freeze_stem=True,
    cam_detach_stage2=True, cam_epochs=10, cam_batch_size=8, cam_lr=0.01, cam_weight_decay=5e-4,
    # the reference's poly optimiser puts the weight decay in SGD's momentum slot
    cam_momentum=5e-4,
    cam_resize_long=(256, 512), cam_color_jitter=(0.3, 0.3, 0.3, 0.1), cam_crop_size=512,
    cam_scales=(1.0, 0.5, 1.5, 2.0), cam_resample="bilinear", cam_upsample="round16",
    cam_eval_thres=0.25,
    # ViT classifier (docs/FIDELITY.md, "ViT classifier" and "ViT CAMs")
    vit_backbone="deit_base_patch16_224", vit_img_size=512, vit_patch_size=None,
    vit_depth=None, vit_pretrained="imagenet", vit_epochs=10, vit_batch_size=4,
    vit_lr=0.01, vit_weight_decay=1e-5, vit_momentum=0.9, vit_grad_clip=1.0,
    vit_resize_long=(256, 512), vit_color_jitter=(0.3, 0.3, 0.3, 0.1),
    vit_freeze_patch_embed=True, vit_lr_schedule="epoch_cosine", vit_cam_method="lrp",
    vit_eval_thres=0.05,
    # AMN (docs/FIDELITY.md, "AMN"): trunk --cam_backbone, CAM scales --cam_scales
    amn_pretrained="imagenet", amn_conf_fg_thres=0.30, amn_conf_bg_thres=0.05,
    amn_crop_size=512, amn_scale_range=(0.5, 1.5), amn_batch_size=16, amn_epochs=5,
    amn_lr=5e-6, amn_head_lr=1e-4, amn_weight_decay=1e-4, amn_eps=0.4, amn_eval_thres=0.25,
    # the reference's model.eval() never reaches its Dropout: on at inference
    amn_infer_dropout=True,
    # MCTformer-V2 (docs/FIDELITY.md, "MCTformer")
    mct_backbone="deit_small_patch16_224", mct_img_size=224, mct_patch_size=None,
    mct_depth=None, mct_pretrained="imagenet", mct_epochs=60, mct_batch_size=64, mct_lr=5e-4,
    mct_weight_decay=0.05, mct_warmup_epochs=5, mct_warmup_lr=1e-6, mct_min_lr=1e-5,
    mct_drop_path=0.1, mct_randaugment="rand-m9-mstd0.5-inc1", mct_color_jitter=0.4,
    mct_reprob=0.25, mct_crop_scale=(0.08, 1.0), mct_layers=3, mct_refine=True, mct_eval_thres=0.25,
    # VWE (docs/FIDELITY.md, "VWE"; rulixiang/vwe configs/voc.yaml, train_cam.py,
    # infer_cam.py): trunk --cam_backbone, CAM scales --cam_scales
    vwe_pretrained="imagenet", vwe_words=256, vwe_gamma=2.0, vwe_epochs=6, vwe_batch_size=16,
    vwe_lr=0.01, vwe_weight_decay=1e-4,
    vwe_momentum=1e-4,  # IRN's poly optimiser quirk again: momentum = weight decay
    vwe_resize_long=(320, 640), vwe_color_jitter=(0, 0, 0, 0), vwe_crop_size=512,
    # its CAMs: flip pair merged by max, PIL bicubic scales, full size without rounding
    vwe_flip_merge="max", vwe_resample="bicubic", vwe_upsample="direct", vwe_eval_thres=0.14,
    # ICAM (docs/FIDELITY.md, "ICAM"): arvijj/icam's train_cam.py / infer_cam.py on this
    # project's trunk (--cam_backbone; the reference's ResNet-38 has MXNet weights only);
    # its PolyOptimizer puts the weight decay in SGD's momentum slot, as IRN's
    icam_pretrained="imagenet", icam_epochs=8, icam_batch_size=8, icam_lr=0.01,
    icam_weight_decay=5e-4, icam_momentum=5e-4, icam_resize_long=(448, 768),
    icam_color_jitter=(0.3, 0.3, 0.3, 0.1), icam_crop_size=448, icam_dropout=0.5,
    icam_head_bias=False, icam_samples=100, icam_sample_eps=1e-3, icam_is_weight=0.8,
    icam_fsl_weight=0.5, icam_fsl_mu=2.5, icam_fsl_sigma=5.0, icam_scales=(0.5, 1.0, 1.5, 2.0),
    # the reference's max-pooled term with background acts on SEAM's PCM maps, absent here
    icam_max_weight=0.0,
    # eval_cam.py: background = 1 - the winner's map, so foreground where it exceeds 0.5
    icam_eval_thres=0.5,
    # ORANDNet (docs/FIDELITY.md, "OR / AND" and "ORANDNet")
    orand_sources="cam,vit_cam:0.15", orand_clip=False, orand_calibration="offset",
    orand_net="fcn8s_vgg16",
    orand_fcn="reference", orand_pretrained="imagenet",
    # the reference's cross-entropy over an image's class maps (no gradient from
    # single-class images); its poly optimiser passes the published weight decay (0)
    # as SGD's momentum and sets no weight decay
    orand_loss="ce", orand_iters=5000, orand_lr=1e-3, orand_momentum=0.0,
    orand_weight_decay=0.0, orand_eval_thres=0.25,
    # IRN refinement (docs/FIDELITY.md, "IRN"): ORANDNet's copy of IRN, whose train_irn
    # runs at its default batch of 16 (IRN's own default is 32)
    sem_seg_cam_dir="orandnet_cam", conf_fg_thres=0.30, conf_bg_thres=0.05,
    irn_trunk="imagenet", irn_backbone="resnet50", irn_crop_size=512, irn_batch_size=16,
    irn_epochs=3, irn_lr=0.1, irn_weight_decay=1e-4,
    irn_momentum=1e-4,  # IRN's poly optimiser quirk again: momentum = weight decay
    irn_radius=10, irn_scale_range=(0.5, 1.5), irn_pair_region="reference",
    irn_path_cells="box", irn_infer_pad=512,
    # the published script rewrites the train_aug pseudo-masks at 0.25 after the walk
    # (its make_sem_seg step writes them at 0.30 first); IRN's default is 0.25 too
    walk_radius=5, beta=10.0, exp_times=8, sem_seg_bg_thres=0.25,
    # DeepLab-v1 LargeFOV segmenter; the reference ships none: DeepLab-v1's own settings
    seg_backbone="resnet101", seg_pretrained="imagenet", seg_label_source="pseudo",
    seg_label_dir="sem_seg", seg_scale_schedule="0.5:0.3,0.75:0.3,1.0:0.4",
    seg_scale_crop=False,
    seg_optimizer="sgd", seg_crop_size=321, seg_batch_size=10, seg_epochs=20, seg_lr=1e-3,
    seg_momentum=0.9, seg_weight_decay=5e-4, seg_scale_range=(0.5, 1.5), seg_fov=12,
    seg_width=1024, seg_dropout=0.5, seg_infer_scales=(1.0, 0.75, 1.25), seg_crf=True,
    seg_splits="val,test", seg_eval_list="val",
)

TOY = dict(
    PAPER,
    # CAMs and pseudo-masks of the 100 toy train images only: the 15-minute budget
    infer_list="train",
    # 2 cores: loading in the main process is fastest (measured 31 vs 28 img/s with 2 workers)
    num_workers=0,
    # no ImageNet weights offline: a small ResNet trained from scratch, so its batch norm
    # and stem train, but layer1-2 stay at their random init as in the reference (measured,
    # one run each: ResNet CAM best mIoU 52.1 detached vs 50.2 trained)
    cam_backbone="resnet18", pretrained="none", cam_freeze_bn=False, cam_freeze_stem=False,
    # colour is what tells the toy's classes apart: no colour jitter (with it: ResNet CAM
    # 31.2, ORANDNet 38.1 vs 50.2, 50.1)
    cam_color_jitter=(0, 0, 0, 0), vit_color_jitter=(0, 0, 0, 0),
    # full-size CAMs straight to the image size: ResNet CAM 51.7 vs 50.2 with round16
    cam_upsample="direct",
    cam_epochs=12, cam_batch_size=16, cam_lr=0.05, cam_weight_decay=1e-4, cam_momentum=0.9,
    cam_resize_long=(112, 176), cam_crop_size=128,
    # a 4-block ViT-Tiny with 8-px patches at 96 px (144 tokens), trained from scratch
    vit_backbone="vit_tiny_patch16_224", vit_img_size=96, vit_patch_size=8, vit_depth=4,
    vit_pretrained="none", vit_epochs=20, vit_batch_size=16, vit_lr=0.05,
    vit_weight_decay=1e-4, vit_resize_long=(80, 128), vit_freeze_patch_embed=False,
    # the gradient-weighted attention rollout: LRP's z+ relevance is weak in a 4-block ViT
    # trained from scratch (ORANDNet best mIoU 54.8 with grad_attn vs 50.1 with lrp)
    vit_lr_schedule="cosine", vit_cam_method="grad_attn",
    # per-pixel BCE against AND: its sigmoid output is calibrated to the 0.25 threshold
    orand_net="small_fcn", orand_pretrained="none", orand_loss="bce", orand_iters=600,
    orand_lr=0.05, orand_momentum=0.9, orand_weight_decay=1e-4,
    # the boundary net reuses the trained CAM trunk (no ImageNet ResNet offline)
    irn_trunk="cam", irn_backbone="resnet18", irn_crop_size=128, irn_batch_size=16,
    irn_epochs=30, irn_momentum=0.9, irn_radius=5,
    # IRN pads to its 512 crop, beyond every VOC image; the toy's crop (128) is below its
    # images (up to 160 px), so the analogue is no padding
    irn_infer_pad=0,
    # the CAM classifier's trunk stands in for ImageNet weights (image-level labels
    # only); measured (val mIoU, 480 its, CRF): on the pseudo-masks 38.1 with it vs
    # 33.3 from scratch; on ground truth 55.0 with it
    seg_backbone="resnet18", seg_pretrained="cam", seg_optimizer="adam", seg_crop_size=96,
    seg_batch_size=8, seg_epochs=32, seg_lr=1e-4, seg_weight_decay=0.0,
    seg_scale_range=(0.7, 1.3), seg_fov=4, seg_width=256, seg_dropout=0.0,
    seg_infer_scales=(1.0,),
    # the curriculum's downsampled pairs in a crop of their own size, not padded to 96 px:
    # 0.64x the pixels, and 32 epochs, not 40: the demo's 15-minute budget (val mIoU on the
    # same pseudo-masks 35.6 -> 31.6 with the crop -> 31.0 with 32 epochs; docs/FIDELITY.md)
    seg_scale_crop=True,
    # AMN on the CAM classifier's trunk (no ImageNet ResNet offline)
    amn_pretrained="cam", amn_crop_size=128, amn_epochs=12, amn_lr=1e-4, amn_head_lr=1e-3,
    amn_infer_dropout=False,
    # MCTformer: the toy ViT's 4-block ViT-Tiny with 8-px patches at 96 px, started from
    # the trained ViT classifier (the toy's stand-in for ImageNet DeiT weights); no
    # RandAugment or colour jitter (colour tells the toy's classes apart); no
    # patch-to-patch refinement: a 4-block ViT's attention is near-uniform and the refined
    # maps do not localise (best mIoU 8.7 refined vs 26.9 without; from scratch 9.3 / 21.8)
    mct_backbone="vit_tiny_patch16_224", mct_img_size=96, mct_patch_size=8, mct_depth=4,
    mct_pretrained="vit", mct_refine=False, mct_epochs=20, mct_batch_size=16, mct_lr=0.02,
    mct_warmup_epochs=2,
    mct_randaugment="", mct_color_jitter=0.0,
    # VWE on the CAM classifier's trunk (no ImageNet ResNet offline), the toy's crops
    vwe_pretrained="cam", vwe_crop_size=128, vwe_resize_long=(112, 176),
    # ICAM on the CAM classifier's trunk (no ImageNet ResNet offline), the toy CAM
    # classifier's crops and no jitter
    icam_pretrained="cam", icam_epochs=12, icam_batch_size=16, icam_lr=0.01,
    icam_weight_decay=1e-4, icam_momentum=0.9, icam_resize_long=(112, 176), icam_crop_size=128,
    icam_color_jitter=(0, 0, 0, 0),
)

# The paper's second row (docs/FIDELITY.md, "ORANDNet over AMN and MCTformer"): the
# ResNet CAMs as AMN's repository trains and makes them (IRN's settings), AMN, MCTformer,
# then OR/AND of AMN's foreground maps and MCTformer's maps with no offset (the reference
# adds +0.15 only to its ViT), ORANDNet (the reference's script passes weight decay 1e-4,
# which its poly optimiser puts in the momentum slot), IRN and the segmenter as in `paper`
PAPER_AMN_MCT = dict(
    PAPER, steps=_steps_but(VIT + VWE + ICAM), orand_sources="amn_cam,mct_cam", orand_momentum=1e-4,
    cam_epochs=5, cam_batch_size=16, cam_lr=0.1, cam_weight_decay=1e-4, cam_momentum=1e-4,
    cam_resize_long=(320, 640), cam_color_jitter=(0, 0, 0, 0), cam_resample="bicubic",
    cam_eval_thres=0.15,
)

# the toy's MCTformer starts from the toy ViT classifier, so train_vit stays
TOY_AMN_MCT = dict(TOY, steps=_steps_but(VIT[1:] + VWE + ICAM), orand_sources="amn_cam,mct_cam")


# MS COCO 2014 (80 classes; README "MS COCO 2014"). What ORANDNet's reference computes on
# COCO (script/irn_coco.sh run through main.py and irn/*.py; it publishes no COCO script
# for the classifiers, ORANDNet or a segmenter, so those keep the VOC values above). Read
# from the code, not from the script's flags alone:
#  - conf_fg_thres / conf_bg_thres stay 0.30 / 0.05: the script passes --fg_seg_bg_thres
#    0.45 --bg_seg_bg_thres 0.15, but irn/cam_to_ir_label.py reads args.conf_fg_thres and
#    args.conf_bg_thres (main.py defaults 0.30 / 0.05); 0.45 / 0.15 are AMN's COCO values
#    (gaviotas/AMN, branch coco14, run_sample_coco.py), the script's evident intent;
#  - sem_seg_bg_thres stays 0.30: irn/make_sem_seg_labels.py reads args.sem_seg_bg_thres
#    (main.py default 0.30), not the --thres 0.6 the script passes; its evaluation pass then
#    rewrites the pseudo-masks at --thres 61, which (the 0.01 scaling loop of eval_irn.py
#    commented out) makes every pixel background of walked maps scaled to max 1;
#  - the boundary net sees the image unpadded: EdgeDisplacement.forward(x, coco=True) skips
#    the 512x512 zero-padding of VOC images (COCO's are up to 640 px); our make_sem_seg_labels
#    never pads.
PAPER_COCO = dict(
    PAPER,
    dataset="coco",
    # metadata/coco/train.txt (82,081 annotated train2014 images) for TRAIN_DATA and
    # INFER_DATA; pseudo-masks scored on them (GT_ROOT = SegmentationClass/train2014)
    train_list="train", infer_list="train", eval_list="train",
    # irn_coco.sh: --irn_learning_rate 0.2828 reaches train_irn.py; its --batch_size 256
    # does not (train_irn.py reads args.irn_batch_size, main.py default 16)
    irn_lr=0.2828, irn_batch_size=16,
    # no test server for COCO semantic segmentation: the segmenter is scored on val2014's
    # 40,137 annotated images, as COCO WSSS papers report it
    seg_splits="val", seg_eval_list="val",
)

# The toy preset on the toy COCO (python -m voc12.toy_coco): COCO's splits, no test list
TOY_COCO = dict(TOY, dataset="coco", train_list="train", seg_splits="val", seg_eval_list="val")

PRESETS = {"paper": PAPER, "toy": TOY, "paper_amn_mct": PAPER_AMN_MCT,
           "toy_amn_mct": TOY_AMN_MCT, "paper_coco": PAPER_COCO, "toy_coco": TOY_COCO}


def apply_preset(args):
    """Fill every flag left unset (None) from args.preset."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args
