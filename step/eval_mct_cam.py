"""Step eval_mct_cam: IoU / precision / recall of the MCTformer CAMs at --mct_eval_thres
and over the threshold sweep -> result/eval/mct_cam.json."""
from pipeline.evaluate import evaluation_step


def run(args):
    return evaluation_step(args, "eval_mct_cam")
