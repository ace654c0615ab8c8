"""Step eval_cam: IoU / precision / recall of the ResNet CAMs at --cam_eval_thres and over
the threshold sweep -> result/eval/eval_cam.json."""
import os

from misc.metrics import evaluate_cam_dir, report
from misc.torchutils import is_main
from voc12.dataloader import VOC


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    voc = VOC(args.voc12_root, args.result_dir)
    ids = voc.ids(args.eval_list)
    res = evaluate_cam_dir(voc, ids, os.path.join(args.result_dir, "cam"), args.cam_eval_thres,
                           producer="make_cam")
    res["list"] = args.eval_list
    return report(res, os.path.join(args.result_dir, "eval", "eval_cam.json"), "ResNet CAM")
