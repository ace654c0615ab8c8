"""The segmenter: majority-vote downsampling, the curriculum schedule, output stride 8 of
the dilated backbones, the server submission tree, and steps 24-27 end to end."""
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
from conftest import TINY
from misc.errors import PipelineError
from misc.imutils import majority_downsample, save_label_png, voc_palette
from net.deeplab import DeepLabLargeFOV
from voc12.dataloader import VOC, LabelTrainDataset, parse_schedule, scale_at


def test_majority_vote_drops_small_blobs_keeps_large_ones_and_ignores_255():
    label = np.zeros((40, 40), np.uint8)
    label[2:5, 2:5] = 7           # 9 px in a 100-px cell: outvoted
    label[20:40, 20:40] = 3       # covers four whole cells
    label[0:10, 30:40] = 255      # a whole cell of 255: stays unlabelled
    label[10:20, 30:40] = 255
    label[10:13, 30:33] = 9       # 9 labelled px in a cell of 255: 255 does not vote
    out = majority_downsample(label, 4, 4)
    assert out[0, 0] == 0 and 7 not in out
    assert (out[2:, 2:] == 3).all()
    assert out[0, 3] == 255 and out[1, 3] == 9


def test_schedule_switches_scale_at_the_right_iterations():
    sched = parse_schedule("0.5:0.3,0.75:0.3,1.0:0.4")
    scales = [scale_at(sched, it, 100) for it in range(100)]
    assert scales[:30] == [0.5] * 30 and scales[30:60] == [0.75] * 30 and scales[60:] == [1.0] * 40
    assert {scale_at(parse_schedule("1.0:1"), it, 10) for it in range(10)} == {1.0}
    for bad in ("0.5:0.5", "2.0:1", "half"):
        with pytest.raises(PipelineError, match="seg_scale_schedule"):
            parse_schedule(bad)


def test_curriculum_downsamples_image_and_label_before_cropping(toy_root):
    voc = VOC(toy_root)
    ids = voc.ids("train")
    data = LabelTrainDataset(voc, ids, None, 64, seed=0, schedule=parse_schedule("0.5:0.5,1.0:0.5"),
                             max_iters=10)
    early, late = data[(0, 0, 0)]["label"], data[(0, 0, 9)]["label"]
    # a 64-px image at scale 0.5 fills a quarter of the 64 x 64 crop; the rest is padding
    assert (early == 255).float().mean() > 0.7 > (late == 255).float().mean()
    # --seg_scale_crop: the same downsampled pixels in a crop of their own size, no padding
    data.scale_crop = True
    small = data[(0, 0, 0)]["label"]
    assert small.shape == (32, 32) and data[(0, 0, 9)]["label"].shape == (64, 64)
    assert torch.equal(torch.bincount(small[small != 255].flatten(), minlength=256),
                       torch.bincount(early[early != 255].flatten(), minlength=256))


@pytest.mark.parametrize("backbone", ["resnet101", "vgg16", "resnet18"])
def test_dilated_backbones_have_output_stride_8(backbone):
    m = DeepLabLargeFOV(21, backbone, fov=4, width=32).eval()
    with torch.no_grad():
        assert m.features(torch.zeros(1, 3, 96, 64)).shape[2:] == (12, 8)
        assert m(torch.zeros(1, 3, 96, 64)).shape == (1, 21, 96, 64)


def test_submission_tree_names_palette_and_sizes(toy_root, tmp_path):
    voc = VOC(toy_root)
    test_ids = voc.ids("test")
    for n, i in enumerate(test_ids):
        h, w = voc.image(i).shape[:2]
        save_label_png(tmp_path / "result" / "seg" / "test" / f"{i}.png", np.full((h, w), n, np.uint8))
    args = ["--voc12_root", toy_root, "--work_dir", str(tmp_path), "--preset", "toy",
            "--steps", "make_submission"]
    run_sample.main(args)
    with tarfile.open(tmp_path / "result" / "seg_comp6_test.tar.gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert sorted(files) == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png"
                                   for i in test_ids)
    for n, i in enumerate(test_ids):
        im = Image.open(io.BytesIO(files[f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png"]))
        assert im.mode == "P" and im.size == Image.open(voc.image_path(i)).size
        assert np.array_equal(np.array(im.getpalette()[:768]).reshape(256, 3), voc_palette())
        assert (np.asarray(im) == n).all()
    os.remove(tmp_path / "result" / "seg" / "test" / f"{test_ids[0]}.png")
    with pytest.raises(PipelineError, match="test prediction missing"):
        run_sample.main(args)




def test_train_seg_before_its_pseudo_masks(toy_root, tmp_path):
    with pytest.raises(PipelineError, match="run step make_sem_seg_labels first"):
        run_sample.main(["--voc12_root", toy_root, "--work_dir", str(tmp_path), *TINY,
                         "--steps", "train_seg"])


def test_steps_17_to_20_pseudo_and_ground_truth(toy_root, full_run):
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(full_run), *TINY, "--steps",
                     "train_seg,make_seg,eval_seg", "--seg_tag", "gt", "--seg_label_source", "gt",
                     "--seg_splits", "val", "--seg_crf"])
    voc = VOC(toy_root)
    for tag in ("seg", "gt"):
        with open(full_run / "result" / "eval" / f"{tag}.json") as f:
            r = json.load(f)
        assert r["list"] == "val" and len(r["per_class"]["iou"]) == 21
        assert r["protocol"]["crf"] is True and r["best"]["threshold"] is None  # argmax
        for i in voc.ids("val"):
            pred = np.asarray(Image.open(full_run / "result" / tag / "val" / f"{i}.png"))
            assert pred.shape == voc.image(i).shape[:2] and pred.max() <= 20
    assert os.path.exists(full_run / "result" / "seg_comp6_test.tar.gz")
    # the CRF in a pool of 2 processes (the device does not wait for it) writes the
    # same masks as inline
    os.rename(full_run / "result" / "gt" / "val", full_run / "result" / "gt" / "inline")
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(full_run), *TINY, "--steps",
                     "make_seg", "--seg_tag", "gt", "--seg_splits", "val", "--seg_crf",
                     "--num_workers", "2"])
    for i in voc.ids("val"):
        a, b = (np.asarray(Image.open(full_run / "result" / "gt" / d / f"{i}.png"))
                for d in ("inline", "val"))
        assert np.array_equal(a, b)
