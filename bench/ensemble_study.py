"""The N-source ensemble study: does ORANDNet generalise beyond two classifiers?

Given a run whose result/ holds the CAMs and evaluation records of several sources (on
the toy: steps 1-13 plus VWE's and ICAM's), every subset of two or more sources gets its
own work dir under --out, whose --orand_sources are the base folders by path, each
calibrated (`:auto`, pipeline/registry.source_calibrations; the law by
--orand_calibration among the flags), so every set follows one rule. Three tiers, each
resumable (the steps skip finished work):
  A  every subset: OR and AND, evaluated (seconds per set);
  B  every pair (or, with --pairs N, the first two sources' pair and the N best others),
     and per size k >= 3 the --best_k subsets whose A score (mean of OR's and AND's best
     mIoU) is highest, and the full set: ORANDNet and IRN's pseudo-masks;
  C  the --seg_top sets of B with the best pseudo-masks: the segmenter.
-> <out>/study.json, <out>/study.md (one row per set: precision / recall / mIoU of OR,
AND, ORANDNet and the pseudo-masks, the segmenter, wall time) and <out>/study_pr.png
(precision against recall of every set).

  python bench/ensemble_study.py --base W --sources cam,vit_cam,amn_cam,mct_cam,vwe_cam,icam_cam \\
      -- --demo --voc12_root W/toy_voc/VOC2012       # the toy; on VOC: --voc12_root ... --preset paper
"""
import argparse
import itertools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run_sample  # noqa: E402
from misc.fileio import atomic_path  # noqa: E402
from misc.metrics import SCORES  # noqa: E402
from pipeline.evaluate import evaluate_outputs  # noqa: E402
from pipeline.registry import output  # noqa: E402
from pipeline.report import read_json  # noqa: E402

TIER_A = ["make_orand"]
TIER_B = ["train_orandnet", "make_orandnet_cam"]
TIER_B_IRN = ["cam_to_ir_label", "train_irn", "make_sem_seg_labels", "eval_sem_seg"]
TIER_C = ["train_seg", "make_seg", "eval_seg"]
REUSED = ("cam.pth",)  # weights the toy's later steps start from (--irn_trunk / --seg_pretrained cam)


def set_dir(a, names):
    return os.path.join(a.out, "+".join(names))


def run_steps(a, names, steps):
    """Run `steps` for the set `names` in its work dir; returns the wall time."""
    w = set_dir(a, names)
    os.makedirs(os.path.join(w, "sess"), exist_ok=True)
    for f in REUSED:  # linked, never written by these steps
        src, dst = os.path.join(a.base, "sess", f), os.path.join(w, "sess", f)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(os.path.abspath(src), dst)
    spec = ",".join(f"{os.path.join(os.path.abspath(a.base), 'result', n)}:auto" for n in names)
    argv = [*a.flags, "--work_dir", w, "--orand_sources", spec, "--steps", ",".join(steps),
            "--resume"]  # a trained network is kept: its checkpoint ends the run at once
    t0 = time.time()
    run_sample.main(argv)
    # eval_orandnet wants every ensemble row: evaluate what this tier made
    made = {"make_orand": ["or_cam", "and_cam"], "make_orandnet_cam": ["orandnet_cam"]}
    todo = [o for s in steps for o in made.get(s, [])]
    if todo:
        evaluate_outputs(run_sample.resolve_args(argv), [output(o) for o in todo])
    return time.time() - t0


def summarise(a, names, seconds):
    """One row of the study: the best-threshold scores of each stage the set has made."""
    w = set_dir(a, names)
    recs = {key: read_json(os.path.join(w, "result", "eval", f"{name}.json"))
            for key, name in (("or", "or_cam"), ("and", "and_cam"), ("orandnet", "orandnet_cam"),
                              ("pseudo_mask", "sem_seg"), ("segmenter", "seg"))}
    row = {"sources": list(names), "k": len(names), "seconds": round(seconds, 1),
           **{key: r and {k: r["best"][k] for k in SCORES if k in r["best"]}
              for key, r in recs.items()}}
    row["offsets"] = recs["or"]["protocol"].get("offsets")
    row["powers"] = recs["or"]["protocol"].get("powers")
    return row


def calibration(r):
    """'+0.15' per additive source, '^0.70' per powered one."""
    if not isinstance(r["offsets"], list):
        return "?"
    return ", ".join(f"^{p:.2f}" if p not in (None, 1) else f"{o:+.2f}"
                     for o, p in zip(r["offsets"], r["powers"] or [None] * len(r["offsets"])))


def a_score(row):
    return (row["or"]["miou"] + row["and"]["miou"]) / 2


def pct(r, key="miou"):
    return "–" if not r or r.get(key) is None else f"{100 * r[key]:.1f}"


def cell(r):
    return "–" if not r else f"{pct(r)} ({pct(r, 'mprecision')} / {pct(r, 'mrecall')})"


def write_report(a, rows, seconds):
    with atomic_path(os.path.join(a.out, "study.json")) as tmp, open(tmp, "w") as f:
        json.dump({"sources": a.sources, "rows": rows, "seconds": round(seconds, 1)}, f, indent=1)
    rows = sorted(rows, key=lambda r: (r["k"], -a_score(r)))
    L = ["# Ensemble study", "", f"Sources: {', '.join(a.sources)} (CAMs of {a.base}); "
         f"calibrated (`:auto`; offset +x or power ^x). Cells: mIoU (precision / recall) at "
         f"each row's best threshold; pseudo-masks and segmenter: their labels. s: this "
         f"invocation's wall time for the set (a set finished earlier shows its rerun's). "
         f"Total {seconds / 60:.1f} min.", "",
         "| sources | k | calibration | OR | AND | ORANDNet | pseudo-masks | segmenter | s |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {' + '.join(r['sources'])} | {r['k']} | {calibration(r)} | {cell(r['or'])} | "
                 f"{cell(r['and'])} | {cell(r['orandnet'])} | {cell(r['pseudo_mask'])} | "
                 f"{pct(r['segmenter'])} | {r['seconds']:.0f} |")
    with atomic_path(os.path.join(a.out, "study.md")) as tmp, open(tmp, "w") as f:
        f.write("\n".join(L) + "\n")
    figure(a, rows)


def figure(a, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 6))
    for key, colour in (("or", "tab:orange"), ("and", "tab:blue"), ("orandnet", "tab:green"),
                        ("pseudo_mask", "tab:red")):
        pts = [(r[key]["mrecall"], r[key]["mprecision"], r["k"]) for r in rows if r[key]]
        if pts:
            x, y, k = zip(*pts)
            ax.scatter([100 * v for v in x], [100 * v for v in y], s=[12 * n for n in k],
                       c=colour, alpha=0.6, label=key.replace("_", "-"))
    ax.set(xlabel="mean recall (%)", ylabel="mean precision (%)",
           title="every source set (marker size: number of sources)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(os.path.join(a.out, "study_pr.png")) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the work dir whose result/ holds the sources")
    p.add_argument("--sources", required=True, help="comma-separated CAM folders of result/")
    p.add_argument("--out", default=None, help="default: <base>/study")
    p.add_argument("--pairs", type=int, default=0, help="tier B: 0 = every pair, N = the "
                   "first two sources' pair and the N best other pairs")
    p.add_argument("--best_k", type=int, default=1, help="tier B: subsets per size k >= 3")
    p.add_argument("--b_sizes", default="", help="tier B: only these sizes k >= 3 "
                   "(comma-separated; default every size)")
    p.add_argument("--seg_top", type=int, default=3, help="tier C: sets given the segmenter")
    p.add_argument("--no_irn", action="store_true",
                   help="tier B without IRN's pseudo-masks (and so no tier C)")
    p.add_argument("--tiers", default="ABC", help="the tiers to run, e.g. A (OR/AND only)")
    p.add_argument("flags", nargs="*", help="run_sample flags after --")
    a = p.parse_args(argv)
    a.sources = a.sources.split(",")
    a.out = a.out or os.path.join(a.base, "study")
    t0, spent = time.time(), {}
    sets = [c for k in range(2, len(a.sources) + 1) for c in itertools.combinations(a.sources, k)]
    for names in sets:  # tier A
        spent[names] = run_steps(a, names, TIER_A)
    rows = {n: summarise(a, n, spent[n]) for n in sets}
    pairs = sorted((n for n in sets if len(n) == 2), key=lambda n: -a_score(rows[n]))
    first = tuple(a.sources[:2])
    chosen = pairs if not a.pairs else [first] + [n for n in pairs if n != first][:a.pairs]
    sizes = [int(k) for k in a.b_sizes.split(",")] if a.b_sizes else range(3, len(a.sources) + 1)
    for k in sizes:
        chosen += sorted((n for n in sets if len(n) == k), key=lambda n: -a_score(rows[n]))[:a.best_k]
    chosen = chosen if "B" in a.tiers else []
    for names in chosen:  # tier B
        spent[names] += run_steps(a, names, TIER_B + ([] if a.no_irn else TIER_B_IRN))
        rows[names] = summarise(a, names, spent[names])
        write_report(a, list(rows.values()), time.time() - t0)
    top = [] if a.no_irn or "C" not in a.tiers else \
        sorted(chosen, key=lambda n: -rows[n]["pseudo_mask"]["miou"])[:a.seg_top]
    for names in top:  # tier C
        spent[names] += run_steps(a, names, TIER_C)
        rows[names] = summarise(a, names, spent[names])
        write_report(a, list(rows.values()), time.time() - t0)
    write_report(a, list(rows.values()), time.time() - t0)
    print(f"[ensemble_study] {(time.time() - t0) / 60:.1f} min: {len(sets)} sets, "
          f"{len(chosen)} with ORANDNet{'' if a.no_irn else ' + IRN'}, {len(top)} with the segmenter -> "
          f"{os.path.join(a.out, 'study.md')}")


if __name__ == "__main__":
    main()
