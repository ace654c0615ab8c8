"""Step eval_icam_cam: IoU / precision / recall of the ICAM CAMs at --icam_eval_thres
and over the threshold sweep -> result/eval/icam_cam.json."""
from pipeline.evaluate import evaluation_step


def run(args):
    return evaluation_step(args, "eval_icam_cam")
