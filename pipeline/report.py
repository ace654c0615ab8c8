"""The report's rows: one per stage of registry.stages (sources, ensembles, pseudo-masks,
segmenter), each read from its evaluation record under result/eval/, with the wall time
of the steps that made it. What the summary tabulates and the figures plot. A stage
without a record is 'not run', never an error."""
import json
import os

from misc.errors import PipelineError
from misc.metrics import SCORES
from pipeline.registry import record_path, stage_steps, stages


def read_json(path):
    """The parsed JSON file, or None when it does not exist."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise PipelineError(f"{path}: damaged JSON ({e}); rerun the step that writes it") from e


def collect(args, step_times=None):
    """One dict per stage, in pipeline order: stage, name, kind ('cam' | 'mask'),
    evaluated_on, the scores at the best threshold (misc.metrics.SCORES: threshold, miou,
    mprecision, mrecall, contour_f; None when not run or, for contour_f, in a record
    older than the metric), fixed (scores at the fixed threshold), sweep, per_class_iou,
    per_class_contour_f, protocol, and steps {step: wall seconds} from `step_times`."""
    times = step_times or {}
    rows = []
    for o in stages(args):
        rec = read_json(record_path(o, args))
        best = rec["best"] if rec else {}
        rows.append({
            "stage": o.title_for(args), "name": o.fmt(args),
            "kind": "cam" if o.kind == "cams" else "mask",
            "evaluated_on": f"{rec['list']} ({rec['n_images']} images)" if rec else None,
            **{k: best.get(k) for k in SCORES},
            "fixed": rec["fixed"] if rec else None, "sweep": rec["sweep"] if rec else None,
            "per_class_iou": rec["per_class"]["iou"] if rec else None,
            "per_class_contour_f": rec["per_class"].get("contour_f") if rec else None,
            "class_names": rec["class_names"] if rec else None,
            "protocol": rec["protocol"] if rec else None,
            "steps": {s: times.get(s) for s in stage_steps(o)}})
    return rows
