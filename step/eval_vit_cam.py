"""Step eval_vit_cam: IoU / precision / recall of the ViT CAMs at --vit_eval_thres and
over the sweep, and where ViT and ResNet CAMs disagree -> result/eval/eval_vit_cam.json."""
import os

from misc.cam_io import cam_path
from misc.metrics import evaluate_cam_dir, firing_disagreement, report
from misc.torchutils import is_main
from voc12.dataloader import VOC


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.eval_list)
    vit_dir, res_dir = (os.path.join(args.result_dir, d) for d in ("vit_cam", "cam"))
    res = evaluate_cam_dir(voc, ids, vit_dir, args.vit_eval_thres, producer="make_vit_cam")
    res["list"] = args.eval_list
    note = ""
    if all(os.path.exists(cam_path(res_dir, i)) for i in ids):
        d = firing_disagreement(voc, ids, res_dir, args.cam_eval_thres, vit_dir,
                                args.vit_eval_thres)
        res["disagreement_vs_resnet"] = {"resnet_only": d["a_only"], "vit_only": d["b_only"],
                                         "both": d["both"], "neither": d["neither"],
                                         "resnet_threshold": args.cam_eval_thres,
                                         "vit_threshold": args.vit_eval_thres}
        note = (f"; of GT foreground, ResNet fires alone on {100 * d['a_only']:.1f}%, ViT alone "
                f"on {100 * d['b_only']:.1f}%, both {100 * d['both']:.1f}%")
    return report(res, os.path.join(args.result_dir, "eval", "eval_vit_cam.json"), "ViT CAM") + note
