"""Step eval_amn_cam: IoU / precision / recall of the AMN CAMs at --amn_eval_thres
and over the threshold sweep -> result/eval/amn_cam.json."""
from pipeline.evaluate import evaluation_step


def run(args):
    return evaluation_step(args, "eval_amn_cam")
