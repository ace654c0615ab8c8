"""Step eval_orandnet: the precision table: each source of --orand_sources, the naive
ensemble, OR, AND and ORANDNet (the outputs the step table says it evaluates); mIoU /
mean precision / mean recall at each row's fixed threshold and at its best threshold
-> result/eval/<output>.json each (printed too)."""
from misc.torchutils import is_main
from pipeline.evaluate import evaluate_outputs, evaluated_by, print_records


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    done = evaluate_outputs(args, evaluated_by("eval_orandnet", args))
    print_records([(o.fmt(args), rec) for o, rec, _ in done])
    best = {o.fmt(args): rec["best"] for o, rec, _ in done}
    o = best["orandnet_cam"]
    return (f"ORANDNet best mIoU {100 * o['miou']:.1f} (precision {100 * o['mprecision']:.1f}, "
            f"recall {100 * o['mrecall']:.1f}, contour F {100 * o['contour_f']:.1f}); OR recall "
            f"{100 * best['or_cam']['mrecall']:.1f}, "
            f"AND precision {100 * best['and_cam']['mprecision']:.1f}; {len(done)} records "
            f"-> {args.result_dir}/eval/")
