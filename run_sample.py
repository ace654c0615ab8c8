"""ORANDNet pipeline orchestrator: runs numbered steps (IRN-style) with a preset.

  python run_sample.py --demo                      # toy VOC, every step, CPU
  python run_sample.py --demo --preset toy_amn_mct --work_dir amn_mct  # second row, toy
  python run_sample.py --voc12_root VOC2012 --preset paper --steps 1-3
  torchrun --nproc_per_node 4 run_sample.py --voc12_root VOC2012 --steps train_cam
  python run_sample.py --data_root coco2014 --preset paper_coco
  python run_sample.py --list_steps
"""
import argparse
import importlib
import json
import os
import sys
import time

from misc.errors import PipelineError
from misc.fileio import atomic_path
from net.irn import PAIR_REGIONS as IRN_PAIR_REGIONS, PATH_CELLS as IRN_PATH_CELLS
from net.resnet_cam import FLIP_MERGES
from net.vit_cam import METHODS as VIT_CAM_METHODS
from pipeline.config import PRESETS, apply_preset
from pipeline.registry import STEP_NAMES, step_table


def parse_steps(spec):
    """'1-3', 'train_cam,make_cam', '2,eval_cam', 'make_orand-eval_orandnet' -> step names
    in pipeline order (a range of names stays right when steps are added in between)."""
    chosen = set()
    number = {n: str(i) for i, n in enumerate(STEP_NAMES)}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in STEP_NAMES:
            chosen.add(part)
            continue
        lo, _, hi = part.partition("-")
        try:
            lo, hi = int(number.get(lo, lo)), int(number.get(hi, hi) or lo)
        except ValueError:
            raise PipelineError(f"--steps: unknown step '{part}'; see --list_steps") from None
        if not 0 <= lo <= hi < len(STEP_NAMES):
            raise PipelineError(f"--steps: '{part}' outside 0-{len(STEP_NAMES) - 1}; see "
                                f"--list_steps")
        chosen.update(STEP_NAMES[lo:hi + 1])
    return [n for n in STEP_NAMES if n in chosen]


def floats(s):
    return tuple(float(x) for x in s.split(","))


def ints(s):
    return tuple(int(x) for x in s.split(","))


def add_training_flags(g, prefix, classifier=False):
    """The optimisation flags every trainer has; classifiers (cam, vit) add their random
    long-side resize and the threshold of their evaluation."""
    rows = [("epochs", int, None), ("iters", int, f"overrides --{prefix}_epochs"),
            ("batch_size", int, "per process"), ("lr", float, "backbone lr; head gets 10x"),
            ("weight_decay", float, None), ("momentum", float, None)]
    if classifier:
        rows += [("resize_long", ints, "LOW,HIGH random long side"),
                 ("color_jitter", floats, "brightness,contrast,saturation,hue (0,0,0,0: off)"),
                 ("eval_thres", float, "background score of the fixed-threshold row")]
    for name, typ, help_ in rows:
        g.add_argument(f"--{prefix}_{name}", type=typ, default=None, help=help_)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    b = argparse.BooleanOptionalAction
    g = p.add_argument_group("pipeline")
    g.add_argument("--steps", default=None,
                   help="e.g. 1-3 or train_cam,make_cam (default: the preset's steps)")
    g.add_argument("--list_steps", action="store_true", help="print the step table and exit")
    g.add_argument("--demo", action="store_true",
                   help="generate the toy VOC under --work_dir if absent; run the toy "
                        "preset (or the toy_* --preset given)")
    g.add_argument("--voc12_root", "--data_root", dest="voc12_root", default=None,
                   help="the dataset root: a VOC2012 folder (holds JPEGImages/), a "
                        "VOC-layout folder with its own classes.txt, or a COCO 2014 folder "
                        "(train2014/, val2014/, annotations/)")
    g.add_argument("--dataset", default=None, help="auto (from the root's layout) | voc | coco")
    g.add_argument("--coco_crowd", choices=["class", "ignore"], default="class",
                   help="coco_masks: crowd regions take their class, or 255 (ignored)")
    g.add_argument("--work_dir", default=".", help="holds sess/ and result/")
    g.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--num_workers", type=int, default=None, help="data-loading processes")
    g.add_argument("--train_list", default=None, help="split name or list file for training")
    g.add_argument("--infer_list", default=None,
                   help="images that get CAMs and pseudo-masks (the segmenter trains on them)")
    g.add_argument("--eval_list", default=None,
                   help="images the CAM and pseudo-mask evaluations score (within infer_list)")
    g = p.add_argument_group("training loop (every trainer)")
    g.add_argument("--ckpt_every", type=int, default=500, help="checkpoint period (iterations)")
    g.add_argument("--resume", action="store_true", help="continue from sess/<name>.ckpt")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("ResNet CAMs (steps 1-3)")
    g.add_argument("--cam_backbone", default=None, help="torchvision/timm ResNet name")
    g.add_argument("--pretrained", default=None, help="imagenet | none | PATH to weights")
    g.add_argument("--cam_freeze_bn", action=b, default=None)
    g.add_argument("--cam_freeze_stem", action=b, default=None)
    g.add_argument("--cam_crop_size", type=int, default=None)
    g.add_argument("--cam_detach_stage2", action=b, default=None,
                   help="stem, layer1, layer2 never train (the reference detaches after layer2)")
    g.add_argument("--cam_scales", type=floats, default=None, help="CAM inference scales")
    g.add_argument("--cam_resample", choices=["bilinear", "bicubic"], default=None,
                   help="PIL filter of the CAM inference scales (ResNet and AMN CAMs): "
                        "bilinear (ORANDNet's) | bicubic (IRN's and AMN's)")
    g.add_argument("--cam_upsample", choices=["round16", "direct"], default=None,
                   help="full-size CAMs: round16 (the reference: resize to the size rounded "
                        "up to a multiple of 16, crop) | direct (resize to the image size)")
    add_training_flags(g, "cam", classifier=True)
    g = p.add_argument_group("ViT CAMs (steps 4-6)")
    g.add_argument("--vit_backbone", default=None, help="any timm class-token ViT/DeiT name")
    g.add_argument("--vit_img_size", type=int, default=None, help="train crop = CAM input size")
    g.add_argument("--vit_patch_size", type=int, default=None, help="override (toy models)")
    g.add_argument("--vit_depth", type=int, default=None, help="override (toy models)")
    g.add_argument("--vit_pretrained", default=None, help="imagenet | none | PATH to weights")
    g.add_argument("--vit_grad_clip", type=float, default=None, help="max grad norm; 0 = off")
    g.add_argument("--vit_cam_method", choices=list(VIT_CAM_METHODS), default=None,
                   help="lrp (the reference's) | grad_attn | gradcam")
    g.add_argument("--vit_freeze_patch_embed", action=b, default=None,
                   help="freeze the patch projection's weight (the reference)")
    g.add_argument("--vit_lr_schedule", choices=["epoch_cosine", "cosine"], default=None,
                   help="epoch_cosine: the reference's (lr stays ~ the base lr) | cosine to 0")
    add_training_flags(g, "vit", classifier=True)
    g = p.add_argument_group("AMN CAMs (steps 7-10; trunk --cam_backbone, scales --cam_scales)")
    g.add_argument("--amn_pretrained", default=None,
                   help="imagenet | cam (the trained CAM classifier's trunk) | none | PATH")
    g.add_argument("--amn_conf_fg_thres", type=float, default=None,
                   help="AMN's training labels from the ResNet CAMs: foreground score")
    g.add_argument("--amn_conf_bg_thres", type=float, default=None, help="... background score")
    g.add_argument("--amn_crop_size", type=int, default=None)
    g.add_argument("--amn_scale_range", type=floats, default=None, help="random rescale LOW,HIGH")
    g.add_argument("--amn_epochs", type=int, default=None)
    g.add_argument("--amn_iters", type=int, default=None, help="overrides --amn_epochs")
    g.add_argument("--amn_batch_size", type=int, default=None, help="per process")
    g.add_argument("--amn_lr", type=float, default=None, help="Adam lr of the trunk")
    g.add_argument("--amn_head_lr", type=float, default=None,
                   help="Adam lr of the label encoder and the head")
    g.add_argument("--amn_weight_decay", type=float, default=None)
    g.add_argument("--amn_eps", type=float, default=None, help="PCL loss: soft-target smoothing")
    g.add_argument("--amn_infer_dropout", action=b, default=None,
                   help="keep the head's Dropout on when making CAMs (the reference's eval() "
                        "never switches it off)")
    g.add_argument("--amn_eval_thres", type=float, default=None,
                   help="background score of the fixed-threshold row")
    g = p.add_argument_group("MCTformer CAMs (steps 11-13)")
    g.add_argument("--mct_backbone", default=None, help="any timm ViT/DeiT name")
    g.add_argument("--mct_img_size", type=int, default=None, help="training crop")
    g.add_argument("--mct_patch_size", type=int, default=None, help="override (toy models)")
    g.add_argument("--mct_depth", type=int, default=None, help="override (toy models)")
    g.add_argument("--mct_pretrained", default=None,
                   help="imagenet | vit (the trained ViT classifier's) | none | PATH (a DeiT/ViT)")
    g.add_argument("--mct_epochs", type=int, default=None)
    g.add_argument("--mct_iters", type=int, default=None, help="overrides --mct_epochs")
    g.add_argument("--mct_batch_size", type=int, default=None, help="per process")
    g.add_argument("--mct_lr", type=float, default=None,
                   help="AdamW base lr, times the global batch / 512 (the reference's rule)")
    g.add_argument("--mct_weight_decay", type=float, default=None)
    g.add_argument("--mct_warmup_epochs", type=int, default=None)
    g.add_argument("--mct_warmup_lr", type=float, default=None)
    g.add_argument("--mct_min_lr", type=float, default=None)
    g.add_argument("--mct_drop_path", type=float, default=None, help="stochastic depth rate")
    g.add_argument("--mct_randaugment", default=None,
                   help="timm RandAugment policy, '' = off (then --mct_color_jitter applies)")
    g.add_argument("--mct_color_jitter", type=float, default=None)
    g.add_argument("--mct_reprob", type=float, default=None, help="random erasing probability")
    g.add_argument("--mct_crop_scale", type=floats, default=None,
                   help="LOW,HIGH area share of the random resized crop")
    g.add_argument("--mct_layers", type=int, default=None,
                   help="last blocks whose class-to-patch attention makes the maps")
    g.add_argument("--mct_refine", action=b, default=None,
                   help="refine the maps by the patch-to-patch attention of every block")
    g.add_argument("--mct_eval_thres", type=float, default=None,
                   help="background score of the fixed-threshold row")
    g = p.add_argument_group("VWE CAMs (steps 14-16; trunk --cam_backbone, scales --cam_scales)")
    g.add_argument("--vwe_pretrained", default=None,
                   help="imagenet | cam (the trained CAM classifier's trunk) | none | PATH")
    g.add_argument("--vwe_words", type=int, default=None, help="codebook size K (visual words)")
    g.add_argument("--vwe_gamma", type=float, default=None,
                   help="hybrid pooling: weight of the global average against the 3 max levels")
    g.add_argument("--vwe_crop_size", type=int, default=None)
    g.add_argument("--vwe_flip_merge", choices=list(FLIP_MERGES), default=None,
                   help="CAMs: merge an image's map and its flip's by max (the reference) | sum")
    g.add_argument("--vwe_resample", choices=["bilinear", "bicubic"], default=None,
                   help="PIL filter of the CAM inference scales (the reference: bicubic)")
    g.add_argument("--vwe_upsample", choices=["round16", "direct"], default=None,
                   help="full-size CAMs: direct (the reference) | round16")
    add_training_flags(g, "vwe", classifier=True)
    g = p.add_argument_group("ICAM CAMs (steps 17-19; trunk --cam_backbone)")
    g.add_argument("--icam_pretrained", default=None,
                   help="imagenet | cam (the trained CAM classifier's trunk) | none | PATH")
    g.add_argument("--icam_crop_size", type=int, default=None)
    g.add_argument("--icam_dropout", type=float, default=None, help="Dropout2d before the head")
    g.add_argument("--icam_head_bias", action=b, default=None,
                   help="a bias in the 1x1 head (the reference's has none)")
    g.add_argument("--icam_samples", type=int, default=None,
                   help="importance-sampled pixels per image and class")
    g.add_argument("--icam_sample_eps", type=float, default=None,
                   help="eps of the sampled values' logits log(y(1-eps)+eps) - log(1-y(1-eps))")
    g.add_argument("--icam_is_weight", type=float, default=None,
                   help="weight of the sampled loss; 1 - it weighs the GAP logits' loss")
    g.add_argument("--icam_fsl_weight", type=float, default=None,
                   help="weight of the feature-similarity loss (0: off)")
    g.add_argument("--icam_fsl_mu", type=float, default=None,
                   help="feature-similarity offset mu: colour differences below sigmoid(-mu) "
                        "pull together")
    g.add_argument("--icam_fsl_sigma", type=float, default=None,
                   help="feature-similarity Gaussian spatial weight, in cells of the logit grid")
    g.add_argument("--icam_max_weight", type=float, default=None,
                   help="weight of the multilabel soft margin of each channel's max softmax, "
                        "background labelled 1 (the reference's PCM-map term, on the CAMs)")
    g.add_argument("--icam_scales", type=floats, default=None, help="CAM inference scales")
    add_training_flags(g, "icam", classifier=True)
    g = p.add_argument_group("ORANDNet (steps 20-25)")
    g.add_argument("--orand_sources", default=None,
                   help="CAM sources NAME[:offset],... (registered or imported names, folders "
                        "under result/, or paths); without :offset, the source's default")
    g.add_argument("--orand_clip", action=b, default=None,
                   help="clip each source + offset to [0, 1] before OR/AND (the reference does not)")
    g.add_argument("--orand_calibration", choices=["offset", "power"], default=None,
                   help="how an auto source meets the highest best threshold T of the set: "
                        "offset adds T - t; power raises it to log T / log t (0 stays 0)")
    g.add_argument("--orand_net", choices=["fcn8s_vgg16", "small_fcn"], default=None)
    g.add_argument("--orand_fcn", choices=["reference", "at_once"], default=None,
                   help="FCN-8s variant: reference (ORANDNet's EncDec) | at_once (FCN's recipe)")
    g.add_argument("--orand_pretrained", default=None, help="imagenet | none | PATH (VGG-16)")
    g.add_argument("--orand_loss", choices=["bce", "ce"], default=None,
                   help="bce: per-pixel vs AND; ce: the reference's cross-entropy over classes")
    g.add_argument("--orand_iters", type=int, default=None, help="one image per iteration")
    g.add_argument("--orand_lr", type=float, default=None)
    g.add_argument("--orand_momentum", type=float, default=None)
    g.add_argument("--orand_weight_decay", type=float, default=None)
    g.add_argument("--orand_eval_thres", type=float, default=None,
                   help="fixed threshold of the naive/OR/AND/ORANDNet rows")
    g.add_argument("--import_dir", default=None, help="other project's CAM .npy files")
    g.add_argument("--import_format", choices=["irn", "mctformer"], default="irn")
    g.add_argument("--import_name", default="imported_cam", help="result/ folder to write")
    g.add_argument("--import_title", default=None, help="its name in reports (default: the name)")
    g.add_argument("--import_thres", type=float, default=None,
                   help="its fixed evaluation threshold (default: --orand_eval_thres)")
    g.add_argument("--import_offset", default="auto",
                   help="its default offset in --orand_sources: a number, or auto (calibrated)")
    g.add_argument("--trust_pickle", action="store_true",
                   help="allow import_cams to unpickle the files of --import_dir")
    g = p.add_argument_group("IRN refinement (steps 26-29)")
    g.add_argument("--sem_seg_cam_dir", default=None, help="CAM folder to refine (name or path)")
    g.add_argument("--conf_fg_thres", type=float, default=None)
    g.add_argument("--conf_bg_thres", type=float, default=None)
    g.add_argument("--irn_trunk", default=None,
                   help="cam (the CAM classifier's trunk) | imagenet | none | PATH")
    g.add_argument("--irn_backbone", default=None, help="trunk backbone unless --irn_trunk cam")
    g.add_argument("--irn_crop_size", type=int, default=None)
    add_training_flags(g, "irn")
    g.add_argument("--irn_radius", type=int, default=None, help="pair-label radius (training)")
    g.add_argument("--irn_scale_range", type=floats, default=None,
                   help="LOW,HIGH random rescale of the training crops' images and labels")
    g.add_argument("--irn_pair_region", choices=list(IRN_PAIR_REGIONS), default=None,
                   help="training-pair sources: reference (IRN's rows 0..h-r, columns "
                        "r-1..w-r) | all (every pixel whose partner is inside)")
    g.add_argument("--irn_path_cells", choices=list(IRN_PATH_CELLS), default=None,
                   help="cells between two pixels: box (IRN's: the pair's box within one "
                        "cell of the line, ends included) | line (rounded segment, no start)")
    g.add_argument("--irn_infer_pad", type=int, default=None,
                   help="zero-pad images to this square before the boundary net (0: off)")
    g.add_argument("--walk_radius", type=int, default=None, help="affinity radius of the walk")
    g.add_argument("--beta", type=float, default=None, help="affinity power")
    g.add_argument("--exp_times", type=int, default=None, help="walk of 2^exp_times steps")
    g.add_argument("--sem_seg_bg_thres", type=float, default=None)
    g = p.add_argument_group("segmenter (steps 30-33)")
    g.add_argument("--seg_tag", default="seg", help="names the weights, outputs and report")
    g.add_argument("--seg_backbone", default=None, help="resnet101 | vgg16 | a timm ResNet")
    g.add_argument("--seg_pretrained", default=None, help="imagenet | cam | none | PATH")
    g.add_argument("--seg_label_source", choices=["pseudo", "gt"], default=None,
                   help="gt: the fully supervised upper bound")
    g.add_argument("--seg_label_dir", default=None, help="pseudo-mask folder (name or path)")
    g.add_argument("--seg_train_list", default=None, help="default: --infer_list")
    g.add_argument("--seg_scale_schedule", default=None,
                   help="curriculum scale:share,...; 1.0:1 turns it off")
    g.add_argument("--seg_scale_crop", action=b, default=None,
                   help="the crop shrinks with the curriculum scale (no padding around the "
                        "downsampled pairs; faster)")
    g.add_argument("--seg_optimizer", choices=["sgd", "adam"], default=None)
    g.add_argument("--seg_crop_size", type=int, default=None)
    add_training_flags(g, "seg")
    g.add_argument("--seg_scale_range", type=floats, default=None, help="random rescale LOW,HIGH")
    g.add_argument("--seg_fov", type=int, default=None, help="fc6 dilation (LargeFOV: 12)")
    g.add_argument("--seg_width", type=int, default=None, help="fc6/fc7 channels")
    g.add_argument("--seg_dropout", type=float, default=None, help="dropout after fc6 and fc7")
    g.add_argument("--seg_infer_scales", type=floats, default=None)
    g.add_argument("--seg_crf", action=b, default=None, help="dense CRF on predictions")
    g.add_argument("--seg_splits", default=None, help="lists make_seg predicts, e.g. val,test")
    g.add_argument("--seg_eval_list", default=None)
    g = p.add_argument_group("report (steps 34-35)")
    g.add_argument("--draw_n", type=int, default=6, help="images drawn (spread over eval_list)")
    g.add_argument("--draw_ids", default=None, help="comma-separated ids to draw instead")
    return p


def resolve_args(argv):
    """Parsed flags with the preset applied and the run's folders set (None for
    --list_steps); --demo generates the toy VOC under --work_dir when it is absent."""
    args = build_parser().parse_args(argv)
    if args.list_steps:
        return args
    if args.demo:
        args.preset = args.preset if args.preset.startswith("toy") else "toy"
        if args.voc12_root is None:
            args.voc12_root = os.path.join(args.work_dir, "toy_voc", "VOC2012")
            if not os.path.isdir(args.voc12_root):
                from voc12.toy import generate
                generate(os.path.dirname(args.voc12_root), seed=args.seed)
    if args.voc12_root is None:
        raise PipelineError("--voc12_root is required (the dataset folder), or use --demo")
    apply_preset(args)
    args.sess_dir = os.path.join(args.work_dir, "sess")
    args.result_dir = os.path.join(args.work_dir, "result")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = resolve_args(argv)
    if args.list_steps:
        for n, name, reads, writes in step_table():
            print(f"{n:>2}  {name:<20} reads: {reads:<60} writes: {writes}")
        return 0
    from misc.torchutils import dist_env, resolve_device, seed_everything
    from pipeline import runlog
    args.device = resolve_device(args.device)
    rank = dist_env()[0]
    record = runlog.start(args, argv)
    status = "error"
    try:
        for name in parse_steps(args.steps or f"0-{len(STEP_NAMES) - 1}"):
            t0 = time.time()
            seed_everything(args.seed)  # a step's result must not depend on the steps run before it
            summary = importlib.import_module(f"step.{name}").run(args)
            dt = round(time.time() - t0, 1)
            record["steps"].append({"step": name, "seconds": dt})
            if rank == 0:
                print(f"[{name}] {dt:.1f} s: {summary}", flush=True)
                # after every step, so that the summary step sees the times of this run
                _record_times(os.path.join(args.result_dir, "step_times.json"), {name: dt})
        status = "ok"
    except BaseException as e:  # the record says how the run ended, then the error goes on
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
        record["error"] = user_message(e) if isinstance(e, PipelineError) else \
            f"{type(e).__name__}: {str(e)[:500]}"
        raise
    finally:
        runlog.finish(record, args.result_dir, status)
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def user_message(err):
    """The message of a PipelineError without the traceback that a DataLoader worker
    wraps around errors it re-raises."""
    msg = str(err)
    marker = "PipelineError: "
    return msg.rsplit(marker, 1)[1].strip() if "Original Traceback" in msg and marker in msg else msg


def _record_times(path, timings):
    """Merge step wall times into result/step_times.json."""
    old = {}
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        pass  # first run, or a damaged file that this run replaces
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({**old, **timings}, f, indent=1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as e:
        print(f"\nerror: {user_message(e)}", file=sys.stderr)  # after any progress bar
        sys.exit(2)
