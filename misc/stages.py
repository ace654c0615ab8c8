"""The pipeline's result stages in order (ResNet CAM ... segmenter), each read from the
eval JSON its evaluation step writes under result/eval/: what the summary reports and
the figures plot. A stage whose JSON is absent is 'not run', never an error."""
import json
import os

from misc.errors import PipelineError

# (stage, eval JSON under result/eval/, row of orandnet.json or None, steps that make it)
CAM_STAGES = [
    ("ResNet CAM", "eval_cam.json", None, ("train_cam", "make_cam")),
    ("ViT CAM", "eval_vit_cam.json", None, ("train_vit", "make_vit_cam")),
    ("naive ensemble", "orandnet.json", "naive_cam", ("make_naive_cam",)),
    ("OR", "orandnet.json", "or_cam", ("make_orand",)),
    ("AND", "orandnet.json", "and_cam", ("make_orand",)),
    ("ORANDNet", "orandnet.json", "orandnet_cam", ("train_orandnet", "make_orandnet_cam")),
]
PM_STAGE = ("pseudo-mask after IRN", "sem_seg.json",
            ("cam_to_ir_label", "train_irn", "make_sem_seg_labels"))
SEG_STEPS = ("train_seg", "make_seg")
SCORES = ("threshold", "miou", "mprecision", "mrecall")


def read_json(path):
    """The parsed JSON file, or None when it does not exist."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise PipelineError(f"{path}: damaged JSON ({e}); rerun the step that writes it") from e


def _cam_row(res, row_name):
    """(best, fixed, sweep, per-class best IoU) of one CAM stage from its eval JSON."""
    if row_name is not None:
        res = next((r for r in res["rows"] if r["name"] == row_name), None)
        if res is None:
            return None
        return res["best"], res["fixed"], res.get("sweep"), res["per_class_best"]["iou"]
    pick = lambda r: {k: r[k] for k in SCORES}  # noqa: E731
    return pick(res["best"]), pick(res), res.get("sweep"), res["best"].get("iou")


def collect(result_dir, seg_tag="seg", step_times=None):
    """One dict per stage, in pipeline order: stage, kind ('cam' | 'mask'), evaluated_on,
    the scores at the best threshold (threshold, miou, mprecision, mrecall; None when not
    run), fixed (scores at the step's fixed threshold), sweep, per_class_iou, and steps
    {step: wall seconds} from `step_times`."""
    ev = os.path.join(result_dir, "eval")
    times = step_times or {}
    rows = []

    def add(stage, kind, steps, on=None, best=None, fixed=None, sweep=None, iou=None):
        row = {"stage": stage, "kind": kind, "evaluated_on": on,
               **{k: (best or {}).get(k) for k in SCORES}, "fixed": fixed, "sweep": sweep,
               "per_class_iou": iou, "steps": {s: times.get(s) for s in steps}}
        rows.append(row)

    for stage, fname, row_name, steps in CAM_STAGES:
        res = read_json(os.path.join(ev, fname))
        got = _cam_row(res, row_name) if res else None
        if got is None:
            add(stage, "cam", steps)
            continue
        best, fixed, sweep, iou = got
        add(stage, "cam", steps, on=_on(res), best=best, fixed=fixed, sweep=sweep, iou=iou)
    stage, fname, steps = PM_STAGE
    res = read_json(os.path.join(ev, fname))
    after = res["after_irn"] if res else None
    add(stage, "mask", steps, on=_on(res) if res else None, best=after,
        iou=after["iou"] if after else None)
    res = read_json(os.path.join(ev, f"{seg_tag}.json"))
    add(f"segmenter ({seg_tag})", "mask", SEG_STEPS, on=_on(res) if res else None,
        best=res, iou=res["iou"] if res else None)
    return rows


def _on(res):
    """'train (100 images)' from an eval JSON's list and n_images."""
    return f"{res.get('list', '?')} ({res.get('n_images', '?')} images)"
