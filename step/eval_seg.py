"""Step eval_seg: the segmenter's predictions on --seg_eval_list against its masks
-> result/eval/<seg_tag>.json."""
import os

from misc.torchutils import is_main
from pipeline.evaluate import evaluate_outputs, evaluated_by, print_records


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    [o] = evaluated_by("eval_seg", args)
    [(o, rec, path)] = evaluate_outputs(args, [o], args.seg_eval_list,
                                        os.path.join(o.path(args), args.seg_eval_list))
    print_records([(f"{args.seg_tag} {args.seg_eval_list}", rec)])
    b = rec["best"]
    return (f"{args.seg_eval_list} mIoU {100 * b['miou']:.1f} (precision "
            f"{100 * b['mprecision']:.1f}, recall {100 * b['mrecall']:.1f}; contour F "
            f"{100 * b['contour_f']:.1f}) -> {path}")
