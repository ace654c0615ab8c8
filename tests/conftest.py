"""Shared fixtures: a tiny toy VOC2012 tree generated once per session, and a private
copy of it for tests that damage files."""
import shutil

import numpy as np
import pytest

from voc12 import toy

# 8 train, 8 aug-only, 4 val, 4 test images (ids toy_000001.. in that order), 64 px
TOY_SIZES = dict(n_train=8, n_aug=8, n_val=4, n_test=4, size=64)

# flags that shrink every step of the toy preset to seconds: the tests' pipeline runs
TINY = ["--preset", "toy", "--device", "cpu", "--num_workers", "0", "--cam_iters", "1",
        "--cam_batch_size", "4", "--cam_crop_size", "64", "--cam_resize_long", "48,80",
        "--cam_scales", "1.0", "--vit_iters", "1", "--vit_batch_size", "4", "--vit_img_size", "32",
        "--vit_resize_long", "32,48", "--vit_depth", "1", "--orand_iters", "2", "--irn_iters", "2",
        "--irn_batch_size", "4", "--irn_crop_size", "64", "--exp_times", "3", "--seg_iters", "2",
        "--seg_batch_size", "4", "--seg_crop_size", "48", "--seg_width", "16",
        "--seg_infer_scales", "1.0", "--amn_iters", "1", "--amn_batch_size", "4",
        "--amn_crop_size", "64", "--mct_iters", "1", "--mct_batch_size", "4", "--mct_img_size", "32",
        "--mct_depth", "1", "--icam_iters", "1", "--icam_batch_size", "4", "--icam_crop_size", "64",
        "--icam_scales", "1.0"]


def step_range(first, last):
    """'--steps' text for the steps from `first` to `last` by name, so that a test keeps
    its meaning when steps are added before them."""
    from pipeline.registry import STEP_NAMES
    return f"{STEP_NAMES.index(first)}-{STEP_NAMES.index(last)}"


def write_pickled_cam(path, obj):
    """Save `obj` the way other WSSS projects save CAMs (np.save of a Python dict: a
    pickle). The tests' one writer of pickles, to check they are refused or imported; no
    test ever loads one except through import_cams."""
    with open(path, "wb") as f:
        np.save(f, obj, allow_pickle=True)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """Path (str) of a read-only toy VOC2012 root shared by the session: never modify it."""
    return toy.generate(str(tmp_path_factory.mktemp("toy_voc")), seed=0, quiet=True, **TOY_SIZES)


@pytest.fixture(scope="session")
def full_run(toy_root, tmp_path_factory):
    """Work dir (pathlib) of one tiny run of every step, 0 to the last, on the toy root."""
    import run_sample
    work = tmp_path_factory.mktemp("full_run")
    run_sample.main(["--voc12_root", toy_root, "--work_dir", str(work), *TINY,
                     "--steps", f"0-{len(run_sample.STEP_NAMES) - 1}"])
    return work


@pytest.fixture
def toy_copy(toy_root, tmp_path):
    """Path (str) of a private copy of the toy VOC2012 root, free to damage."""
    dst = tmp_path / "VOC2012"
    shutil.copytree(toy_root, dst)
    return str(dst)
