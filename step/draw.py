"""Step draw: the figures of a run (toy or VOC) -> result/figures/:
grid_<id>.png for a handful of images (image, ground truth, every CAM stage of the
report: the sources, naive, OR, AND, ORANDNet; then the label stages: pseudo-mask,
segmenter prediction; maps on one 0-1 colour scale), pr_threshold.png (precision and
recall of every CAM stage against the background threshold, the picture of the paper's
argument, and the contour F-score against the threshold), class_iou.png (per-class IoU
and contour F of the segmenter and the pseudo-masks) and curves.png (every trainer's
loss and lr per iteration). Panels of stages that have not run say so."""
import os

import matplotlib
import numpy as np
from tqdm import tqdm

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from misc.cam_io import cam_path, load_cam  # noqa: E402
from misc.errors import PipelineError  # noqa: E402
from misc.fileio import atomic_path  # noqa: E402
from misc.imutils import read_label  # noqa: E402
from misc.torchutils import is_main  # noqa: E402
from pipeline import dataset  # noqa: E402
from pipeline.registry import output, stages  # noqa: E402
from pipeline.report import collect, read_json  # noqa: E402
from voc12.dataloader import MultiScaleDataset  # noqa: E402


def pick_ids(args, ds):
    """--draw_ids, or --draw_n ids spread evenly over the eval list."""
    if args.draw_ids:
        return [i.strip() for i in args.draw_ids.split(",") if i.strip()]
    ids = ds.ids(args.eval_list)
    n = max(1, min(args.draw_n, len(ids)))
    return [ids[round(k * (len(ids) - 1) / max(n - 1, 1))] for k in range(n)]


def _map(folder, img_id, labels):
    """Max over the image's class maps (HxW), or None when the file is absent."""
    path = cam_path(folder, img_id)
    if not os.path.exists(path):
        return None
    c = load_cam(path, labels)
    return c["high_res"].max(0) if len(c["keys"]) else np.zeros(c["high_res"].shape[1:])


def _label_png(path):
    return read_label(path) if os.path.exists(path) else None


def _predictor(args):
    """item of a MultiScaleDataset -> the segmenter's label map (on the fly: any image of
    any list), or None when no segmenter is trained."""
    path = output("{seg_tag}.pth").path(args)
    if not os.path.exists(path):
        return lambda item: None
    from net.deeplab import seg_probs, trained_seg_net  # torch only when a model exists
    model = trained_seg_net(args.seg_tag, args.seg_backbone, args.seg_fov, args.seg_width,
                            dataset(args).n_classes + 1, path).to(args.device).eval()
    return lambda item: seg_probs(model, item["imgs"], tuple(item["size"]),
                                  args.device).argmax(0).cpu().numpy()


def draw_grid(path, img, panels, palette):
    """One row: the image, then (title, kind, array) panels; kind 'label' or 'map'."""
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.3))
    axes[0].imshow(img)
    axes[0].set_title("image", fontsize=8)
    grey = img.mean(2)
    shown = None
    for ax, (title, kind, a) in zip(axes[1:], panels):
        ax.set_title(title, fontsize=8)
        if a is None:
            ax.imshow(np.full(grey.shape, 0.9), cmap="gray", vmin=0, vmax=1)
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
        elif kind == "label":
            ax.imshow(palette[a])
        else:
            ax.imshow(grey, cmap="gray")
            shown = ax.imshow(a, cmap="jet", vmin=0, vmax=1, alpha=0.55)
    for ax in axes:
        ax.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=list(axes), fraction=0.012, pad=0.01, label="map value")
    _save(fig, path)


def _pct_or_nan(v):
    return np.nan if v is None else 100 * v  # a record older than the metric has none


def draw_pr(path, rows):
    """Precision and recall against the threshold (left), precision against recall
    (middle), the contour F-score against the threshold (right; label stages as lines)."""
    fig, (a, b, e) = plt.subplots(1, 3, figsize=(16, 4.2))
    for n, r in enumerate(x for x in rows if x["kind"] == "cam" and x["sweep"]):
        c = f"C{n}"
        t = [s["threshold"] for s in r["sweep"]]
        p, rc = [100 * s["mprecision"] for s in r["sweep"]], [100 * s["mrecall"] for s in r["sweep"]]
        a.plot(t, p, "-", color=c, label=f"{r['stage']} precision")
        a.plot(t, rc, "--", color=c, label=f"{r['stage']} recall")
        b.plot(rc, p, "-o", color=c, ms=2.5, label=r["stage"])
        b.plot(100 * r["mrecall"], 100 * r["mprecision"], "*", color=c, ms=11)
        e.plot(t, [_pct_or_nan(s.get("contour_f")) for s in r["sweep"]], "-", color=c,
               label=r["stage"])
        e.plot(r["threshold"], _pct_or_nan(r["contour_f"]), "*", color=c, ms=11)
    for r, m in zip((x for x in rows if x["kind"] == "mask" and x["miou"] is not None), "Ds"):
        b.plot(100 * r["mrecall"], 100 * r["mprecision"], m, color="k", ms=7,
               label=f"{r['stage']} ({r['evaluated_on']})")
        e.axhline(_pct_or_nan(r["contour_f"]), color="k", ls=":" if m == "D" else "-.", lw=1,
                  label=f"{r['stage']} ({r['evaluated_on']})")
    a.set(xlabel="background threshold", ylabel="mean over classes (%)",
          title="precision (solid) and recall (dashed)")
    b.set(xlabel="mean recall (%)", ylabel="mean precision (%)",
          title="precision vs recall (star: best-mIoU threshold)")
    e.set(xlabel="background threshold", ylabel="contour F, mean over classes (%)",
          title="contour F-score (star: best-mIoU threshold)")
    a.legend(fontsize=6, ncol=2)
    b.legend(fontsize=7)
    e.legend(fontsize=6)
    for ax in (a, b, e):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def draw_class_iou(path, rows):
    """Per-class IoU (top) and contour F (bottom) bars of the mask stages (pseudo-masks,
    segmenter), scored classes only."""
    rows = [r for r in rows if r["kind"] == "mask" and r["per_class_iou"]]
    names = rows[0]["class_names"] if rows else []
    keep = [k for k in range(len(names)) if any(r["per_class_iou"][k] is not None for r in rows)]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.55 * len(keep) + 2), 7.2), sharex=True)
    w = 0.8 / max(len(rows), 1)
    for ax, key, mean, title in ((axes[0], "per_class_iou", "miou", "IoU"),
                                 (axes[1], "per_class_contour_f", "contour_f", "contour F")):
        for n, r in enumerate(rows):
            per = r[key] or [None] * len(names)  # a record older than the contour metric
            ax.bar(np.arange(len(keep)) + (n - (len(rows) - 1) / 2) * w,
                   [100 * (per[k] or 0) for k in keep], w,
                   label=f"{r['stage']}, {r['evaluated_on']}: mean {_pct_or_nan(r[mean]):.1f}")
        ax.set(ylabel=f"{title} (%)", ylim=(0, 100), title=f"per-class {title}")
        if rows:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no pseudo-masks or segmenter scored yet", ha="center",
                    transform=ax.transAxes)
    axes[1].set_xticks(np.arange(len(keep)), [names[k] for k in keep], rotation=45, ha="right")
    fig.tight_layout()
    _save(fig, path)


def draw_curves(path, sess_dir):
    """Loss (log scale) and lr per iteration of every trainer that saved a curve."""
    names = sorted(f[:-len(".curve.json")] for f in os.listdir(sess_dir)
                   if f.endswith(".curve.json")) if os.path.isdir(sess_dir) else []
    fig, axes = plt.subplots(2, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 5),
                             squeeze=False)
    for k, name in enumerate(names):
        c = read_json(os.path.join(sess_dir, f"{name}.curve.json"))
        loss, lr = axes[0, k], axes[1, k]
        loss.plot(c["iter"], c["loss"], lw=0.6, color="C0", alpha=0.5)
        win = max(1, len(c["loss"]) // 50)  # a running mean over 2 % of the run
        if len(c["loss"]) >= win:
            loss.plot(c["iter"][win - 1:], np.convolve(c["loss"], np.ones(win) / win, "valid"),
                      color="C0")
        loss.set(title=name, yscale="log")
        lr.plot(c["iter"], c["lr"], color="C1")
        lr.set(xlabel="iteration", ylabel="lr" if k == 0 else None)
        for ax in (loss, lr):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("loss")
    if not names:
        axes[0, 0].text(0.5, 0.5, "no trainer has run", ha="center", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def grid_panels(args):
    """(title, kind, output) of each grid panel after the ground truth: every CAM stage of
    the report, then the label stages (the segmenter predicted on the fly)."""
    return [(o.title_for(args), "map" if o.kind == "cams" else "label", o) for o in stages(args)]


def run(args):
    if not is_main():
        return "drawn on rank 0"
    ds = dataset(args)
    out = os.path.join(args.result_dir, "figures")
    ids = pick_ids(args, ds)
    ds.check_images(ids)
    panels = grid_panels(args)
    predict = _predictor(args)
    seg = output("{seg_tag}")
    # each image decoded once: its scales feed the segmenter, its raw copy the grid
    data = MultiScaleDataset(ds, ids, args.seg_infer_scales, raw=True)
    for k in tqdm(range(len(data)), desc="draw"):
        item = data[k]
        i = item["id"]
        try:
            gt = ds.mask(i)
        except PipelineError:
            gt = None  # a test image: no mask to show
        shown = [("ground truth", "label", gt)]
        for title, kind, o in panels:
            if o == seg:
                shown.append((f"prediction ({args.seg_tag})", kind, predict(item)))
            elif kind == "map":
                shown.append((title, kind, _map(o.path(args), i, item["keys"])))
            else:
                shown.append((title, kind, _label_png(os.path.join(o.path(args), f"{i}.png"))))
        draw_grid(os.path.join(out, f"grid_{i}.png"), item["raw"], shown, ds.palette)
    rows = collect(args, read_json(os.path.join(args.result_dir, "step_times.json")))
    draw_pr(os.path.join(out, "pr_threshold.png"), rows)
    draw_class_iou(os.path.join(out, "class_iou.png"), rows)
    draw_curves(os.path.join(out, "curves.png"), args.sess_dir)
    return f"{len(ids)} image grids, pr_threshold.png, class_iou.png, curves.png -> {out}"
