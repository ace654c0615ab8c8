"""Step eval_vit_cam: IoU / precision / recall of the ViT CAMs at --vit_eval_thres and
over the sweep, and where ViT and ResNet CAMs disagree -> result/eval/vit_cam.json."""
import os

from misc.cam_io import cam_path
from misc.torchutils import is_main
from pipeline import dataset
from pipeline.evaluate import (evaluate_outputs, evaluated_by, firing_disagreement,
                               print_records, summary_line, write_record)
from pipeline.registry import output


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    [(o, rec, path)] = evaluate_outputs(args, evaluated_by("eval_vit_cam", args))
    print_records([(o.title_for(args), rec)])
    note = ""
    ds = dataset(args)
    ids = ds.ids(args.eval_list)
    res = output("cam")
    if all(os.path.exists(cam_path(res.path(args), i)) for i in ids):
        d = firing_disagreement(ds, ids, res.path(args), res.threshold(args), o.path(args),
                                o.threshold(args))
        rec["disagreement_vs_resnet"] = {"resnet_only": d["a_only"], "vit_only": d["b_only"],
                                         "both": d["both"], "neither": d["neither"],
                                         "resnet_threshold": res.threshold(args),
                                         "vit_threshold": o.threshold(args)}
        write_record(rec, o, args)
        note = (f"; of GT foreground, ResNet fires alone on {100 * d['a_only']:.1f}%, ViT alone "
                f"on {100 * d['b_only']:.1f}%, both {100 * d['both']:.1f}%")
    return summary_line(rec, path) + note
