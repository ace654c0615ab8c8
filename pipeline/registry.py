"""The pipeline declared once. OUTPUTS: everything a step writes (a CAM folder, a label
folder or weights), with what the reports need (title, evaluation threshold, how it was
made); the CAM sources are the CAM outputs with an OR/AND offset (a number, or "auto":
calibrated from the evaluation records, see source_calibrations). STEPS: every step in
order with the outputs it reads, writes and evaluates. --list_steps, the prerequisite
checks, the evaluations, summary and draw all read these two tables: a new CAM method
is one Output entry plus its steps."""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable

from misc.errors import PipelineError
from misc.fileio import require_files, result_folder

SOURCE_FILE = "source.json"  # what makes a folder of imported CAMs a registered source
AUTO = "auto"  # an offset calibrated from the evaluation records (source_calibrations)


@dataclass(frozen=True)
class Output:
    """Something a step writes. name: the folder under result/ (cams: <id>.npz, labels:
    <id>.png) or the file under sess/ (weights); may hold {seg_tag}."""
    name: str
    kind: str                       # "cams" | "labels" | "weights"
    title: str = ""                 # the stage's name in reports; "" = an intermediate
    thres_flag: str = ""            # the flag holding the fixed evaluation threshold
    thres: float | None = None      # or the threshold itself (imported CAMs)
    offset: float | str | None = None  # not None: a CAM source for OR/AND, its default
    # offset: the value its method is paired with in the reference, or "auto" (calibrated)
    protocol: Callable = field(default=lambda args: {}, compare=False)  # how it was made
    folder: str = ""                # a CAM folder outside result/ (given by path)
    per_split: bool = False         # labels in <name>/<split>/ (the segmenter's predictions)

    def fmt(self, args):
        """This output with its {seg_tag} filled in."""
        return self.name.format(seg_tag=getattr(args, "seg_tag", "seg"))

    def path(self, args):
        """Its folder under result/ (cams, labels) or its file under sess/ (weights)."""
        if self.folder:
            return self.folder
        base = args.sess_dir if self.kind == "weights" else args.result_dir
        return os.path.join(base, self.fmt(args))

    def title_for(self, args):
        return self.title.format(seg_tag=getattr(args, "seg_tag", "seg")) or self.fmt(args)

    def threshold(self, args):
        """The fixed background threshold of its evaluation (None: an argmax)."""
        return getattr(args, self.thres_flag) if self.thres_flag else self.thres


def _ensemble(args):
    try:  # the offsets as make_orand resolved them (a calibration reads eval records)
        cal = source_calibrations(args.orand_sources, args)
    except PipelineError:
        return {"from": args.orand_sources, "offsets": "not calibrated yet"}
    return {"from": args.orand_sources, "offsets": [off for _, off, _ in cal],
            "powers": [pw for _, _, pw in cal]}


OUTPUTS = (
    Output("coco_masks", "labels"),  # COCO's ground truth converted from the instance JSON
    Output("cam.pth", "weights"),
    Output("cam", "cams", "ResNet CAM", "cam_eval_thres", offset=0.0,
           protocol=lambda a: {"scales": list(a.cam_scales), "flip": True, "crf": False}),
    Output("vit.pth", "weights"),
    Output("vit_cam", "cams", "ViT CAM", "vit_eval_thres", offset=0.15,
           protocol=lambda a: {"scales": [f"{a.vit_img_size}x{a.vit_img_size}"], "flip": False,
                               "crf": False, "method": a.vit_cam_method}),
    Output("amn_label", "labels"),
    Output("amn.pth", "weights"),
    Output("amn_cam", "cams", "AMN CAM", "amn_eval_thres", offset=0.0,
           protocol=lambda a: {"scales": list(a.cam_scales), "flip": True, "crf": False,
                               "labels fed": True, "dropout": bool(a.amn_infer_dropout)}),
    Output("mct.pth", "weights"),
    Output("mct_cam", "cams", "MCTformer CAM", "mct_eval_thres", offset=0.0,
           protocol=lambda a: {"scales": ["full size"], "flip": True, "crf": False,
                               "layers": a.mct_layers, "refine": bool(a.mct_refine)}),
    Output("vwe.pth", "weights"),
    Output("vwe_cam", "cams", "VWE CAM", "vwe_eval_thres", offset=AUTO,
           protocol=lambda a: {"scales": list(a.cam_scales), "flip": a.vwe_flip_merge,
                               "crf": False, "words": a.vwe_words}),
    Output("icam.pth", "weights"),
    Output("icam_cam", "cams", "ICAM CAM", "icam_eval_thres", offset=AUTO,
           protocol=lambda a: {"scales": list(a.icam_scales), "flip": True, "crf": False,
                               "labels fed": True, "winner-take-all": True}),
    Output("naive_cam", "cams", "naive ensemble", "orand_eval_thres", protocol=_ensemble),
    Output("or_cam", "cams", "OR", "orand_eval_thres", protocol=_ensemble),
    Output("and_cam", "cams", "AND", "orand_eval_thres", protocol=_ensemble),
    Output("orandnet.pth", "weights"),
    Output("orandnet_cam", "cams", "ORANDNet", "orand_eval_thres",
           protocol=lambda a: {**_ensemble(a), "net": a.orand_net, "loss": a.orand_loss}),
    Output("ir_label", "labels"),
    Output("irn.pth", "weights"),
    Output("sem_seg", "labels", "pseudo-mask after IRN", "sem_seg_bg_thres",
           protocol=lambda a: {"from": a.sem_seg_cam_dir, "scales": [1.0], "flip": True,
                               "crf": "confident labels"}),
    Output("{seg_tag}.pth", "weights"),
    Output("{seg_tag}", "labels", "segmenter ({seg_tag})", per_split=True,
           protocol=lambda a: {"scales": list(a.seg_infer_scales), "flip": True,
                               "crf": bool(a.seg_crf)}),
)


@dataclass(frozen=True)
class Step:
    """A step: module step/<name>.py with run(args). reads/writes/evaluates name outputs;
    '--flag' names the outputs a flag chooses; other words describe dataset inputs."""
    name: str
    reads: tuple
    writes: tuple = ()
    evaluates: tuple = ()


STEPS = (  # numbered from 0: step 0 prepares COCO's masks, a no-op on VOC-layout roots
    Step("coco_masks", ("annotations/instances_*2014.json", "eval_list + seg_eval_list ids"),
         ("coco_masks", "result/coco_masks_check.csv")),
    Step("train_cam", ("train_list images + labels",), ("cam.pth",)),
    Step("make_cam", ("cam.pth", "infer_list images"), ("cam",)),
    Step("eval_cam", ("eval_list masks",), evaluates=("cam",)),
    Step("train_vit", ("train_list images + labels",), ("vit.pth",)),
    Step("make_vit_cam", ("vit.pth", "infer_list images"), ("vit_cam",)),
    Step("eval_vit_cam", ("eval_list masks", "result/cam/ if made"), evaluates=("vit_cam",)),
    Step("cam_to_amn_label", ("cam", "infer_list images"), ("amn_label",)),
    Step("train_amn", ("amn_label", "infer_list images + labels (+ sess/cam.pth with "
                                    "--amn_pretrained cam)"), ("amn.pth",)),
    Step("make_amn_cam", ("amn.pth", "amn_label", "infer_list images"), ("amn_cam",)),
    Step("eval_amn_cam", ("eval_list masks",), evaluates=("amn_cam",)),
    Step("train_mct", ("train_list images + labels",), ("mct.pth",)),
    Step("make_mct_cam", ("mct.pth", "infer_list images"), ("mct_cam",)),
    Step("eval_mct_cam", ("eval_list masks",), evaluates=("mct_cam",)),
    Step("train_vwe", ("train_list images + labels (+ sess/cam.pth with --vwe_pretrained cam)",),
         ("vwe.pth",)),
    Step("make_vwe_cam", ("vwe.pth", "infer_list images"), ("vwe_cam",)),
    Step("eval_vwe_cam", ("eval_list masks",), evaluates=("vwe_cam",)),
    Step("train_icam", ("train_list images + labels (+ sess/cam.pth with --icam_pretrained "
                        "cam)",), ("icam.pth",)),
    Step("make_icam_cam", ("icam.pth", "infer_list images"), ("icam_cam",)),
    Step("eval_icam_cam", ("eval_list masks",), evaluates=("icam_cam",)),
    Step("import_cams", ("--import_dir (other projects' pickled .npy)",),
         ("result/<--import_name>/<id>.npz + source.json",)),
    Step("make_orand", ("--orand_sources",), ("or_cam", "and_cam")),
    Step("make_naive_cam", ("--orand_sources",), ("naive_cam",)),
    Step("train_orandnet", ("or_cam", "and_cam"), ("orandnet.pth",)),
    Step("make_orandnet_cam", ("orandnet.pth", "or_cam"), ("orandnet_cam",)),
    Step("eval_orandnet", ("eval_list masks",),
         evaluates=("--orand_sources", "naive_cam", "or_cam", "and_cam", "orandnet_cam")),
    Step("cam_to_ir_label", ("--sem_seg_cam_dir", "infer_list images"), ("ir_label",)),
    Step("train_irn", ("ir_label", "infer_list images (+ sess/cam.pth with --irn_trunk cam)"),
         ("irn.pth",)),
    Step("make_sem_seg_labels", ("irn.pth", "--sem_seg_cam_dir"), ("sem_seg",)),
    Step("eval_sem_seg", ("eval_list masks",), evaluates=("sem_seg", "--sem_seg_cam_dir")),
    Step("train_seg", ("--seg_label_dir", "seg_train_list images (+ sess/cam.pth with "
                                          "--seg_pretrained cam)"), ("{seg_tag}.pth",)),
    Step("make_seg", ("{seg_tag}.pth", "--seg_splits images"), ("{seg_tag}",)),
    Step("eval_seg", ("seg_eval_list masks",), evaluates=("{seg_tag}",)),
    Step("make_submission", ("{seg_tag}",), ("result/{seg_tag}_comp6_test.tar.gz",)),
    Step("draw", ("every CAM and label output", "eval records", "training curves"),
         ("result/figures/*.png",)),
    Step("summary", ("eval records", "result/step_times.json"),
         ("result/summary.md", "result/summary.json")),
)
STEP_NAMES = tuple(s.name for s in STEPS)
_BY_NAME = {o.name: o for o in OUTPUTS}


def output(name):
    """The registered output `name`."""
    return _BY_NAME[name]


def registered(name):
    """Whether `name` is a registered output."""
    return name in _BY_NAME


def sources():
    """The registered CAM sources, in pipeline order."""
    return [o for o in OUTPUTS if o.offset is not None]


def cam_output(spec, args):
    """The CAM output a name or path designates: a registered one, an imported folder
    with its source.json, or any other folder of CAM files (threshold: the ensemble's)."""
    name = spec.rstrip("/")
    if registered(name) and output(name).kind == "cams":
        return output(name)
    path = result_folder(name, args.result_dir)
    manifest = os.path.join(path, SOURCE_FILE)
    base = os.path.basename(path)
    if os.path.exists(manifest):
        try:
            with open(manifest) as f:
                m = json.load(f)
            return Output(base, "cams", m["title"], thres=float(m["threshold"]),
                          offset=parse_offset(m.get("offset", AUTO), manifest), folder=path,
                          protocol=lambda a, m=m: {"imported": m.get("format", "?")})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(f"{manifest}: damaged ({e}); rerun import_cams") from e
    return Output(base, "cams", base, "orand_eval_thres", offset=AUTO, folder=path)



def parse_offset(value, where):
    """An offset as given: a number or "auto"."""
    if value == AUTO:
        return AUTO
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"{where}: offset '{value}' is neither a number nor "
                            f"'{AUTO}'") from None


def parse_sources(spec, args):
    """--orand_sources 'cam,vit_cam:0.15,vwe_cam:auto' -> [(Output, offset)], offset a
    number or "auto"; without ':offset' a source takes its registered default (the
    reference's value for the paper's sources, "auto" for the others and for folders)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, off = part.rpartition(":")
        if not sep or os.sep in off:
            name, off = part, None
        src = cam_output(name, args)
        out.append((src, src.offset if off is None else parse_offset(off, f"--orand_sources '{part}'")))
    if len(out) < 2:
        raise PipelineError(f"--orand_sources '{spec}': need at least two CAM folders")
    return out


def source_record(o, args):
    """The evaluation record of a CAM source: result/eval/<name>.json, or for a folder
    given by path, eval/<name>.json beside it (where that folder's run wrote it)."""
    if o.folder:
        return os.path.join(os.path.dirname(o.folder.rstrip("/")), "eval",
                            f"{os.path.basename(o.folder.rstrip('/'))}.json")
    return record_path(o, args)


def source_calibrations(spec, args):
    """--orand_sources with every "auto" source calibrated -> [(folder, offset, power)]
    (misc.orand.calibrate: m ** power + offset). Calibration brings the source's best
    background threshold t (the sweep's best of its evaluation record) to the highest t
    among the sources, T, so the source that needs the highest threshold keeps its maps and
    one whose maps peak lower is raised: --orand_calibration offset adds T - t (the
    reference's +0.15 for its ViT: t 0.10 against ResNet's 0.25); power raises the map to
    log T / log t (0 and 1 stay, so ORing many sources does not lift the background).
    Every source of the set is read; explicit offsets stay additive."""
    pairs = parse_sources(spec, args)
    if all(off != AUTO for _, off in pairs):
        return [(o.path(args), off, 1.0) for o, off in pairs]
    best = {}
    for o, _ in pairs:
        path = source_record(o, args)
        try:
            with open(path) as f:
                best[o.path(args)] = float(json.load(f)["best"]["threshold"])
        except FileNotFoundError:
            raise PipelineError(f"{path}: missing; a calibrated ('auto') offset needs the "
                                f"evaluation of '{o.name}' (run its eval step) or give "
                                f"its offset as {o.name}:<number>") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(f"{path}: damaged ({e}); rerun the evaluation of "
                                f"'{o.name}'") from e
    top, power = max(best.values()), getattr(args, "orand_calibration", "offset") == "power"

    def calibrated(t):
        if not power:
            return round(top - t, 6), 1.0
        if not 0 < t < 1 or not 0 < top < 1:
            raise PipelineError(f"--orand_calibration power: best thresholds "
                                f"{sorted(best.values())} must lie strictly between 0 and 1; "
                                f"use offset calibration")
        return 0.0, round(math.log(top) / math.log(t), 6)
    return [(o.path(args), *(calibrated(best[o.path(args)]) if off == AUTO else (off, 1.0)))
            for o, off in pairs]


def resolve(token, args):
    """The outputs a read/write/evaluate token of a step stands for in this run."""
    if token == "--orand_sources":
        return [o for o, _ in parse_sources(args.orand_sources, args)]
    if token in ("--sem_seg_cam_dir", "--seg_label_dir", "--import_name"):
        value = getattr(args, token[2:])
        if token == "--sem_seg_cam_dir":
            return [cam_output(value, args)]
        if registered(value):
            return [output(value)]
        return [Output(os.path.basename(value.rstrip("/")), "labels",
                       folder=result_folder(value, args.result_dir))]
    return [output(token)] if registered(token) else []


def producer(name):
    """The step that writes output `name` (a template such as '{seg_tag}' included)."""
    for s in STEPS:
        if name in s.writes:
            return s.name
    return "the step that makes it"


def stage_steps(o):
    """The steps that make stage `o`: its producer, and back through the weights and
    intermediates it reads, stopping at other stages (so the ORANDNet row is
    train_orandnet + make_orandnet_cam), in pipeline order."""
    found, todo = set(), [o.name]
    while todo:
        name = todo.pop()
        for s in STEPS:
            if name in s.writes and s.name not in found:
                found.add(s.name)
                todo += [r for r in s.reads if registered(r) and not output(r).title]
    return [s for s in STEP_NAMES if s in found]


def stages(args):
    """The report's stages in pipeline order: every titled output, the CAM sources only
    when this run combines them or they have been evaluated, imported or path sources
    of --orand_sources after the registered ones."""
    chosen = [o for o, _ in parse_sources(args.orand_sources, args)] \
        if getattr(args, "orand_sources", None) else []
    shown = [o for o in sources() if o in chosen or os.path.exists(record_path(o, args))]
    extra = [c for c in chosen if c not in OUTPUTS]
    return shown + extra + [o for o in OUTPUTS if o.title and o.offset is None]


def record_path(o, args):
    """result/eval/<output>.json: where the evaluation record of an output lives."""
    return os.path.join(args.result_dir, "eval", f"{o.fmt(args)}.json")


def require(o, args, ids, what):
    """Fail before any work, naming the first missing file of output `o` for `ids` and
    the step that writes it."""
    require_files(o.path(args), ids, ".npz" if o.kind == "cams" else ".png", what,
                  producer(o.name))


def describe(token, record=False, write=False):
    """How --list_steps shows a read/write/evaluate token."""
    name = token.replace("{seg_tag}", "<seg_tag>")
    if record:
        return f"result/eval/{name}.json" if registered(token) else \
            f"result/eval/<{token} folder>.json"
    if not registered(token):
        return name
    o = output(token)
    if o.kind == "weights":
        return f"sess/{name}" + (" (+ .ckpt)" if write else "")
    split = "<split>/" if o.per_split else ""
    return f"result/{name}/{split}<id>.{'npz' if o.kind == 'cams' else 'png'}"


def step_table():
    """(number, name, reads, writes) rows of --list_steps and README."""
    rows = []
    for n, s in enumerate(STEPS):
        reads = [describe(t) for t in s.evaluates + s.reads]
        writes = [describe(w, write=True) for w in s.writes]
        writes += [describe(t, record=True) for t in s.evaluates]
        rows.append((n, s.name, ", ".join(reads), ", ".join(writes)))
    return rows
