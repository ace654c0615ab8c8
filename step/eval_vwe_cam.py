"""Step eval_vwe_cam: IoU / precision / recall of the VWE CAMs at --vwe_eval_thres and
over the threshold sweep -> result/eval/vwe_cam.json."""
from pipeline.evaluate import evaluation_step


def run(args):
    return evaluation_step(args, "eval_vwe_cam")
