"""Step eval_orandnet: the precision table: rows = each source, naive ensemble, OR, AND,
ORANDNet; mIoU / mean precision / mean recall at each row's fixed default threshold and
at its best threshold -> result/eval/orandnet.json (printed too)."""
import json
import os

from misc.fileio import atomic_path
from misc.metrics import evaluate_cam_dir, format_table
from misc.orand import parse_sources
from misc.torchutils import is_main
from voc12.dataloader import VOC

KEEP = ("threshold", "miou", "mprecision", "mrecall")


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.eval_list)
    fixed = {"cam": args.cam_eval_thres, "vit_cam": args.vit_eval_thres}
    rows = [(os.path.basename(d), d, "make_cam / make_vit_cam / import_cams")
            for d, _ in parse_sources(args.orand_sources, args.result_dir)]
    rows += [("naive_cam", os.path.join(args.result_dir, "naive_cam"), "make_naive_cam"),
             ("or_cam", os.path.join(args.result_dir, "or_cam"), "make_orand"),
             ("and_cam", os.path.join(args.result_dir, "and_cam"), "make_orand"),
             ("orandnet_cam", os.path.join(args.result_dir, "orandnet_cam"), "make_orandnet_cam")]
    table = []
    for name, folder, producer in rows:
        r = evaluate_cam_dir(voc, ids, folder, fixed.get(name, args.orand_eval_thres),
                             producer=producer)
        table.append({"name": name, "folder": folder, "fixed": {k: r[k] for k in KEEP},
                      "best": {k: r["best"][k] for k in KEEP}, "sweep": r["sweep"],
                      "per_class_best": {k: r["best"][k] for k in ("iou", "precision", "recall")}})
    path = os.path.join(args.result_dir, "eval", "orandnet.json")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({"n_images": len(ids), "list": args.eval_list, "loss": args.orand_loss,
                   "sources": args.orand_sources, "rows": table}, f, indent=1)
    print(format_table([(f"{r['name']} @{kind}", r[kind]) for r in table
                        for kind in ("fixed", "best")]))
    best = {r["name"]: r["best"] for r in table}
    o = best["orandnet_cam"]
    return (f"ORANDNet best mIoU {100 * o['miou']:.1f} (precision {100 * o['mprecision']:.1f}, "
            f"recall {100 * o['mrecall']:.1f}); OR recall {100 * best['or_cam']['mrecall']:.1f}, "
            f"AND precision {100 * best['and_cam']['mprecision']:.1f} -> {path}")
