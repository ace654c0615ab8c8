"""Step eval_sem_seg: pseudo-masks after IRN (result/sem_seg/) against the masks of the
eval list, next to the --sem_seg_cam_dir maps thresholded without IRN (at that folder's
own fixed threshold, and at its best) -> result/eval/sem_seg.json and the CAM folder's
record."""
from misc.torchutils import is_main
from pipeline.evaluate import evaluate_outputs, evaluated_by, print_records


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    (pm, after, path), (cams, before, _) = evaluate_outputs(args, evaluated_by("eval_sem_seg", args))
    name = cams.fmt(args)
    print_records([(name, before), ("IRN pseudo-mask", after)])
    a, f, b = after["best"], before["fixed"], before["best"]
    return (f"pseudo-masks mIoU {100 * a['miou']:.1f} (precision {100 * a['mprecision']:.1f}, "
            f"recall {100 * a['mrecall']:.1f}; contour F {100 * a['contour_f']:.1f}); {name} "
            f"without IRN {100 * f['miou']:.1f} at {f['threshold']:.2f}, best {100 * b['miou']:.1f} -> {path}")
