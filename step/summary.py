"""Step summary: the paper-style table of the run, one row per stage of the report (the
CAM sources, naive ensemble, OR, AND, ORANDNet, pseudo-mask after IRN, segmenter) with
mIoU, mean precision, mean recall, the contour F-score and the wall time of the steps
that made it, the protocol card (what each row scored and how) and the label stages'
per-class IoU and contour F; printed and written to result/summary.md and
result/summary.json."""
import json
import os
import time

from misc.fileio import atomic_path
from misc.torchutils import is_main
from pipeline import dataset
from pipeline.report import collect, read_json

PAPER = {"PASCAL VOC 2012": ("Paper (PASCAL VOC 2012): segmenter 70.3 val / 72.1 test "
                            "mIoU over ResNet-50 + ViT CAMs (+6.8 val over the IRN baseline), "
                            "72.2 / 72.9 over AMN + MCTformer CAMs.")}


def _pct(v):
    return "—" if v is None else f"{100 * v:.1f}"


def _secs(steps):
    """('train_cam 163 + make_cam 29', '192') for the steps of a row that have run."""
    done = {s: t for s, t in steps.items() if t is not None}
    if not done:
        return "—", "—"
    fmt = lambda t: f"{t:.1f}" if t < 10 else f"{t:.0f}"  # noqa: E731
    return " + ".join(f"{s} {fmt(t)}" for s, t in done.items()), fmt(sum(done.values()))


def markdown(rows, times, header, paper=""):
    """The summary as markdown: the stage table, then every step's wall time."""
    out = [header, "",
           "| stage | evaluated on | threshold | mIoU | precision | recall | contour F | mIoU at "
           "the fixed threshold | steps (s) | wall time (s) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # a scored row without a threshold is the segmenter: its argmax needs none
        thr = "—" if r["miou"] is None else \
            "argmax" if r["threshold"] is None else f"{r['threshold']:.2f}"
        fixed = "—" if not r["fixed"] else \
            f"{_pct(r['fixed']['miou'])} @{r['fixed']['threshold']:.2f}"
        steps, total = _secs(r["steps"])
        out.append(f"| {r['stage']} | {r['evaluated_on'] or 'not run'} | {thr} | "
                   f"{_pct(r['miou'])} | {_pct(r['mprecision'])} | {_pct(r['mrecall'])} | "
                   f"{_pct(r['contour_f'])} | {fixed} | {steps} | {total} |")
    out += ["", "CAM rows: scores at the best background threshold of the sweep; the fixed "
            "threshold is the step's default. Pseudo-masks: after the random walk "
            "(threshold = its background score). Means over classes. Contour F: ICAM's "
            "boundary F-score (tolerance 0.008 of the image diagonal) at the row's threshold, "
            "over foreground classes.", "",
            "| step | wall time (s) |", "|---|---|"]
    out += [f"| {s} | {t:.1f} |" for s, t in times.items()]
    out += [f"| **total** | **{sum(times.values()):.1f}** |", ""]
    out += protocol_card(rows) + [""] + per_class(rows, "per_class_iou", "IoU")
    out += per_class(rows, "per_class_contour_f", "contour F") + [paper, ""]
    return "\n".join(out)


def per_class(rows, key="per_class_iou", title="IoU"):
    """A per-class score (`key` of the rows: per_class_iou, per_class_contour_f) of the
    label stages (pseudo-masks, segmenter) under the dataset's class names; classes no
    stage scored are left out (at COCO's 80 classes the table stays as long as the
    classes present)."""
    scored = [r for r in rows if r["kind"] == "mask" and r[key]]
    if not scored:
        return []
    names = scored[0]["class_names"]
    out = [f"## Per-class {title}", "", "| class | " + " | ".join(r["stage"] for r in scored)
           + " |", "|---|" + "---|" * len(scored)]
    for k, name in enumerate(names):
        v = [r[key][k] if k < len(r[key]) else None for r in scored]
        if any(x is not None for x in v):
            out.append(f"| {name} | " + " | ".join(_pct(x) for x in v) + " |")
    return out + [""]


def _cell(v):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def protocol_card(rows):
    """How each scored row was made and scored: split and image count, input scales,
    flip, CRF, threshold; anything else its record says."""
    out = ["## Protocol", "", "| stage | split scored | images | scales | flip | CRF | "
           "threshold | also |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["protocol"] is None:
            continue
        p = dict(r["protocol"])
        split, _, n = (r["evaluated_on"] or "").partition(" (")
        main = [p.pop(k, None) for k in ("scales", "flip", "crf", "threshold")]
        fixed = p.pop("fixed_threshold", None)
        main[3] = "argmax" if main[3] is None else \
            f"{main[3]:.2f}" + ("" if fixed is None else f" (best; fixed {fixed:.2f})")
        also = "; ".join(f"{k} {_cell(v)}" for k, v in p.items())
        out.append(f"| {r['stage']} | {split} | {n.split()[0]} | "
                   + " | ".join(_cell(v) for v in main) + f" | {also or '—'} |")
    return out


def run(args):
    if not is_main():
        return "written on rank 0"
    times = read_json(os.path.join(args.result_dir, "step_times.json")) or {}
    rows = collect(args, times)
    title = dataset(args).title
    header = (f"# ORANDNet run summary\n\n{time.strftime('%Y-%m-%d %H:%M')}, preset "
              f"`{args.preset}`, seed {args.seed}, device {args.device}, dataset {title} "
              f"(`{args.voc12_root}`).")
    paper = PAPER.get(title, f"The paper's numbers in our sources are for PASCAL VOC 2012 "
                             f"only; none to compare with on {title}.")
    text = markdown(rows, times, header, paper)
    for name, body in (("summary.md", text),
                       ("summary.json", json.dumps({"preset": args.preset, "seed": args.seed,
                                                    "dataset": title, "rows": rows,
                                                    "step_times": times},
                                                   indent=1))):
        path = os.path.join(args.result_dir, name)
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(body)
    print(text)
    done = sum(r["miou"] is not None for r in rows)
    return (f"{done} of {len(rows)} stages scored -> {os.path.join(args.result_dir, 'summary.md')}"
            f" and summary.json")
