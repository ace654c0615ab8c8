"""Step eval_seg: the segmenter's val predictions against the val masks
-> result/eval/<seg_tag>.json."""
import json
import os

from misc.fileio import atomic_path
from misc.metrics import evaluate_label_dir, format_table
from misc.torchutils import is_main
from voc12.dataloader import VOC


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.seg_eval_list)
    r = evaluate_label_dir(voc, ids, os.path.join(args.result_dir, args.seg_tag, args.seg_eval_list),
                           "make_seg")
    r.update(tag=args.seg_tag, list=args.seg_eval_list, crf=args.seg_crf)
    path = os.path.join(args.result_dir, "eval", f"{args.seg_tag}.json")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(r, f, indent=1)
    print(format_table([(f"{args.seg_tag} {args.seg_eval_list}", r)],
                       columns=("miou", "mprecision", "mrecall")))
    return (f"{args.seg_eval_list} mIoU {100 * r['miou']:.1f} (precision "
            f"{100 * r['mprecision']:.1f}, recall {100 * r['mrecall']:.1f}) -> {path}")
