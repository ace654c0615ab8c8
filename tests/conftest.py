"""Shared fixtures: a tiny toy VOC2012 tree generated once per session, and a private
copy of it for tests that damage files."""
import shutil

import pytest

from voc12 import toy

# 8 train, 8 aug-only, 4 val, 4 test images (ids toy_000001.. in that order), 64 px
TOY_SIZES = dict(n_train=8, n_aug=8, n_val=4, n_test=4, size=64)


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
