"""Step eval_cam: IoU / precision / recall of the ResNet CAMs at --cam_eval_thres and over
the threshold sweep -> result/eval/cam.json."""
from pipeline.evaluate import evaluation_step


def run(args):
    return evaluation_step(args, "eval_cam")
