"""Datasets by name: `open_dataset(name, root, cache_dir)`. Adding a dataset is one entry
of DATASETS (a reader with the VOC class's interface: ids, labels, check_images, image,
mask, image_path, mask_path, class_names, n_classes, label_names, palette, title,
test_server). 'auto' recognises the root's layout."""
import os

from misc.errors import PipelineError
from voc12.coco import COCO, is_coco_root
from voc12.dataloader import VOC

DATASETS = {"voc": VOC,     # a VOC-layout root, with its own classes.txt or VOC's 20 classes
            "coco": COCO}   # MS COCO 2014: train2014/, val2014/, annotations/instances_*.json


def detect(root):
    """The dataset name a root's layout implies."""
    if os.path.isdir(os.path.join(root, "JPEGImages")):
        return "voc"
    if is_coco_root(root):
        return "coco"
    return "voc"  # let the VOC reader name what is missing


def open_dataset(name, root, cache_dir=None):
    """The reader of `root` for dataset `name` ('auto': from the layout)."""
    if name == "auto":
        name = detect(os.path.abspath(os.path.expanduser(root)))
    if name not in DATASETS:
        raise PipelineError(f"--dataset {name}: expected auto or one of {sorted(DATASETS)}")
    return DATASETS[name](root, cache_dir)
