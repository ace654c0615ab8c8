"""Step coco_masks: COCO's ground truth by route (b): every image of --eval_list and
--seg_eval_list (and --seg_train_list with --seg_label_source gt) converted from its
instance JSON with pycocotools, by voc12.coco.semantic_mask's rule (crowd regions first,
then largest to smallest instance, no 255 borders; --coco_crowd: crowd regions as their
class or 255) -> result/coco_masks/<id>.png, once: a rerun skips finished images. Then,
for every image that also has a provided pre-converted mask (SegmentationClass/), how
the two differ -> result/coco_masks_check.csv. Nothing to do on a VOC-layout root."""
import csv
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.imutils import read_label
from misc.torchutils import is_main
from pipeline import dataset
from pipeline.images import process_images
from voc12.coco import CONVERTED_MASKS, mask_difference

RULE_FILE = "rule.json"
CHECK_FILE = "coco_masks_check.csv"


class _Converted(torch.utils.data.Dataset):
    """Per image: its mask converted from the JSON (in the loader's worker processes)."""

    def __init__(self, ds, ids, crowd):
        self.ds, self.ids, self.crowd = ds, list(ids), crowd
        for folder in sorted({ds.folder(i) for i in self.ids}):
            ds.load_api(folder)  # before the workers fork: they share the parsed JSON

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        return {"id": self.ids[k], "label": self.ds.convert_mask(self.ids[k], self.crowd)}


class _Compared(torch.utils.data.Dataset):
    """Per image with both masks: mask_difference(converted, provided)."""

    def __init__(self, ds, ids):
        self.ds, self.ids = ds, list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        i = self.ids[k]
        ours, theirs = (read_label(p) for p in (self.ds.converted_mask_path(i),
                                                 self.ds.provided_mask_path(i)))
        if ours.shape != theirs.shape:
            raise PipelineError(f"{self.ds.provided_mask_path(i)}: size {theirs.shape} differs "
                                f"from the JSON's {ours.shape}; restore the mask")
        return {"id": i, **mask_difference(ours, theirs)}


def _check_rule(folder, crowd):
    """Converted masks of one rule only: refuse to mix them with another --coco_crowd."""
    path = os.path.join(folder, RULE_FILE)
    rule = {"crowd": crowd, "order": "crowd regions first, then largest to smallest",
            "borders": "none"}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != rule:
            raise PipelineError(f"{path}: these masks were converted with --coco_crowd "
                                f"{old.get('crowd')}; delete {folder} to convert them again")
    elif is_main():
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(rule, f, indent=1)


def _write_check(args, ds, ids):
    both = [i for i in ids if os.path.exists(ds.provided_mask_path(i))]
    if not both:
        return "no provided masks to compare with"
    loader = torch.utils.data.DataLoader(_Compared(ds, both), batch_size=None,
                                         num_workers=args.num_workers)
    rows = list(tqdm(loader, total=len(both), desc="compare with provided masks"))
    path = os.path.join(args.result_dir, CHECK_FILE)
    names = ds.label_names
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "pixels", "differ", "differ_pct", "ignore_only_ours",
                    "ignore_only_provided", "classes_only_ours", "classes_only_provided"])
        for r in rows:
            w.writerow([r["id"], r["pixels"], r["differ"], f"{100 * r['differ'] / r['pixels']:.3f}",
                        r["ignore_only_ours"], r["ignore_only_provided"],
                        " ".join(names[c] for c in r["classes_only_ours"]),
                        " ".join(names[c] for c in r["classes_only_provided"])])
    share = np.array([(r["differ"] + r["ignore_only_ours"] + r["ignore_only_provided"])
                      / r["pixels"] for r in rows])
    same = int((share == 0).sum())
    worst = int(share.argmax())
    differ = "" if same == len(rows) else \
        (f", {len(rows) - same} differ (mean {100 * share.mean():.2f} % of pixels, most "
         f"{rows[worst]['id']} {100 * share[worst]:.1f} %)")
    return f"{len(rows)} compared with the provided masks: {same} identical{differ} -> {path}"


def run(args):
    ds = dataset(args)
    if not hasattr(ds, "convert_mask"):
        return f"nothing to convert: {ds.title} keeps its masks as PNGs"
    lists = [args.eval_list, args.seg_eval_list] + \
        [args.seg_train_list or args.infer_list] * (args.seg_label_source == "gt")
    ids = list(dict.fromkeys(i for name in lists for i in ds.ids(name)))
    folder = os.path.join(args.result_dir, CONVERTED_MASKS)
    _check_rule(folder, args.coco_crowd)
    written = process_images(args, CONVERTED_MASKS,
                             lambda d, todo: _Converted(d, todo, args.coco_crowd),
                             lambda item: item["label"], ids=ids, ext=".png")
    check = _write_check(args, ds, ids) if is_main() else "checked on rank 0"
    return f"{written}; {check}"
