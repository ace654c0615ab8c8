"""Step eval_sem_seg: pseudo-masks after IRN (result/sem_seg/) against the masks of the
infer list, next to the --sem_seg_cam_dir maps thresholded without IRN (fixed and best
threshold) -> result/eval/sem_seg.json."""
import json
import os

from misc.fileio import atomic_path
from misc.metrics import evaluate_cam_dir, evaluate_label_dir, format_table
from misc.fileio import result_folder
from misc.torchutils import is_main
from voc12.dataloader import VOC


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.eval_list)
    cam_dir = result_folder(args.sem_seg_cam_dir, args.result_dir)
    before = evaluate_cam_dir(voc, ids, cam_dir, args.orand_eval_thres, producer="the CAM steps")
    after = evaluate_label_dir(voc, ids, os.path.join(args.result_dir, "sem_seg"),
                               "make_sem_seg_labels")
    after["threshold"] = args.sem_seg_bg_thres
    name = os.path.basename(cam_dir)
    rows = [(f"{name} @fixed", before), (f"{name} @best", before["best"]), ("IRN pseudo-mask", after)]
    path = os.path.join(args.result_dir, "eval", "sem_seg.json")
    keep = ("threshold", "miou", "mprecision", "mrecall", "iou", "precision", "recall")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({"cam_dir": cam_dir, "list": args.eval_list, "n_images": len(ids),
                   "before_irn_fixed": {k: before[k] for k in keep},
                   "before_irn_best": {k: before["best"][k] for k in keep},
                   "after_irn": {k: after[k] for k in keep}}, f, indent=1)
    print(format_table(rows))
    return (f"pseudo-masks mIoU {100 * after['miou']:.1f} (precision {100 * after['mprecision']:.1f}, "
            f"recall {100 * after['mrecall']:.1f}); {name} without IRN {100 * before['miou']:.1f} at "
            f"{before['threshold']:.2f}, best {100 * before['best']['miou']:.1f} -> {path}")
