"""Step make_submission: the test predictions in the PASCAL server's layout,
results/VOC2012/Segmentation/comp6_test_cls/<id>.png (palette PNGs at image size),
packed as result/<seg_tag>_comp6_test.tar.gz. Nothing to do for a dataset without such a
server (COCO, a user's own classes)."""
import os
import tarfile

from tqdm import tqdm

from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.imutils import image_size, read_label, save_label_png
from misc.torchutils import is_main
from pipeline import dataset


def run(args):
    if not is_main():
        return "packed on rank 0"
    voc = dataset(args)
    if voc.test_server is None:
        return f"nothing to submit: {voc.title} has no test server for these predictions"
    ids = voc.ids("test")
    pred_dir = os.path.join(args.result_dir, args.seg_tag, "test")
    tree = os.path.join(args.result_dir, f"{args.seg_tag}_submission")
    for i in tqdm(ids, desc="submission"):
        src = os.path.join(pred_dir, f"{i}.png")
        if not os.path.exists(src):
            raise PipelineError(f"{src}: test prediction missing; run step make_seg with "
                                f"--seg_splits including test first")
        label = read_label(src)
        if label.shape != image_size(voc.image_path(i)):
            raise PipelineError(f"{src}: size {label.shape} differs from its image; rerun make_seg")
        save_label_png(os.path.join(tree, voc.test_server, f"{i}.png"), label)
    path = os.path.join(args.result_dir, f"{args.seg_tag}_comp6_test.tar.gz")
    with atomic_path(path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(os.path.join(tree, "results"), arcname="results")
    return f"{len(ids)} test predictions -> {path} (upload it to the PASCAL VOC server)"
