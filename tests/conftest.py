"""Shared fixtures: a tiny toy VOC2012 tree generated once per session, and a private
copy of it for tests that damage files."""
import shutil

import numpy as np
import pytest

from voc12 import toy

# 8 train, 8 aug-only, 4 val, 4 test images (ids toy_000001.. in that order), 64 px
TOY_SIZES = dict(n_train=8, n_aug=8, n_val=4, n_test=4, size=64)


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


@pytest.fixture
def toy_copy(toy_root, tmp_path):
    """Path (str) of a private copy of the toy VOC2012 root, free to damage."""
    dst = tmp_path / "VOC2012"
    shutil.copytree(toy_root, dst)
    return str(dst)
