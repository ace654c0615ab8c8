"""Step eval_cam: IoU / precision / recall of the ResNet CAMs at --cam_eval_thres and over
the threshold sweep -> result/eval/cam.json."""
from misc.torchutils import is_main
from pipeline.evaluate import evaluate_outputs, evaluated_by, print_records, summary_line


def run(args):
    if not is_main():
        return "evaluated on rank 0"
    [(o, rec, path)] = evaluate_outputs(args, evaluated_by("eval_cam", args))
    print_records([(o.title_for(args), rec)])
    return summary_line(rec, path)
