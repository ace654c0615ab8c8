"""Tests of misc.cam_io: the one CAM .npz format, atomic writes and every load error."""
import os
import pickle
import re

import numpy as np
import pytest

from conftest import write_pickled_cam
from misc import cam_io
from misc.cam_io import cam_path, load_cam, save_cam, strided_size
from misc.errors import PipelineError
from misc.fileio import atomic_path


def _raises_naming(path, extra=""):
    return pytest.raises(PipelineError, match=re.escape(str(path)) + extra)


def _maps(k=2, h=17, w=22, seed=0):
    rng = np.random.default_rng(seed)
    high = rng.random((k, h, w)).astype(np.float32)
    return high[:, ::4, ::4].copy(), high


def test_cam_path_and_strided_size(tmp_path):
    assert cam_path(str(tmp_path), "2007_000032") == os.path.join(str(tmp_path), "2007_000032.npz")
    assert strided_size(17, 22) == (5, 6) and strided_size(16, 20) == (4, 5)
    assert strided_size(17, 22) == _maps()[0].shape[1:]


def test_round_trip(tmp_path):
    cam, high = _maps()
    path = str(tmp_path / "a" / "x.npz")  # the folder is created
    save_cam(path, [3, 11], cam * 5, high)
    c = load_cam(path, labels=[3, 11])
    assert set(c) == {"keys", "cam", "high_res"}
    assert c["keys"].tolist() == [3, 11] and c["keys"].dtype.kind == "i"
    assert c["cam"].shape == (2, 5, 6) and c["high_res"].shape == (2, 17, 22)
    assert c["cam"].dtype == np.float32 and c["high_res"].dtype == np.float32
    assert np.abs(c["high_res"] - high).max() < 1e-3
    assert np.abs(c["cam"] - cam * 5).max() < 5e-3  # float16: relative error ~5e-4
    assert not np.array_equal(c["high_res"], high)  # really stored as float16
    assert load_cam(path, labels=[11, 3])["keys"].tolist() == [3, 11]  # order-free match


def test_round_trip_no_keys(tmp_path):
    path = str(tmp_path / "x.npz")
    save_cam(path, [], np.zeros((0, 5, 6)), np.zeros((0, 17, 22)))
    c = load_cam(path, labels=[])
    assert c["keys"].size == 0 and c["high_res"].shape == (0, 17, 22)


def test_file_format(tmp_path):
    cam, high = _maps()
    path = tmp_path / "x.npz"
    save_cam(str(path), np.array([1, 7]), cam, high)
    assert os.listdir(tmp_path) == ["x.npz"]  # no temporary file, no ".npz.npz"
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["cam", "high_res", "keys"]
        assert z["keys"].dtype == np.int16 and z["keys"].tolist() == [1, 7]
        assert z["cam"].dtype == np.float16 and z["high_res"].dtype == np.float16
        assert z["cam"].shape == (2, 5, 6) and z["high_res"].shape == (2, 17, 22)


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    cam, high = _maps()
    save_cam(str(path), [4], cam[:1], high[:1])
    before = path.read_bytes()
    real = np.savez_compressed

    def crash(f, **arrays):
        real(f, **arrays)  # bytes written to the temporary file, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(cam_io.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        save_cam(str(path), [9], cam[:1] + 1, high[:1] + 1)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.npz"]
    assert load_cam(str(path))["keys"].tolist() == [4]


def test_atomic_path_exception_keeps_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(str(path)) as tmp:
            assert tmp != str(path) and tmp.endswith(".txt")  # extension kept last
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with atomic_path(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_pickled_npz_refused(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.savez(f, keys=np.array([{"a": 1}], dtype=object), cam=np.zeros((1, 2, 2)),
                 high_res=np.zeros((1, 8, 8)))
    with _raises_naming(path, ".*pickle.*import_cams"):
        load_cam(str(path))


@pytest.mark.parametrize("how", ["npy", "pickle"])
def test_pickle_under_npz_name_refused(tmp_path, how):
    path = tmp_path / "x.npz"
    if how == "npy":
        write_pickled_cam(path, {"keys": [1], "cam": np.zeros((1, 2, 2))})  # an object array
    else:
        with open(path, "wb") as f:
            pickle.dump({"keys": [1]}, f)
    with _raises_naming(path, ".*pickle.*import_cams"):
        load_cam(str(path))


def test_nan_and_inf_refused(tmp_path):
    cam, high = _maps()
    bad_high = high.copy()
    bad_high[1, 3, 4] = np.nan
    save_cam(str(tmp_path / "nan.npz"), [0, 1], cam, bad_high)
    with _raises_naming(tmp_path / "nan.npz", ".*NaN"):
        load_cam(str(tmp_path / "nan.npz"))
    bad_cam = cam.copy()
    bad_cam[0, 0, 0] = np.inf
    save_cam(str(tmp_path / "inf.npz"), [0, 1], bad_cam, high)
    with _raises_naming(tmp_path / "inf.npz", ".*Inf"):
        load_cam(str(tmp_path / "inf.npz"))


def test_keys_must_match_labels(tmp_path):
    cam, high = _maps()
    path = tmp_path / "x.npz"
    save_cam(str(path), [1, 2], cam, high)
    load_cam(str(path))  # no labels given: accepted
    for labels in ([1, 3], [1], [1, 2, 3], []):
        with _raises_naming(path):
            load_cam(str(path), labels=labels)


def test_keys_out_of_range(tmp_path):
    cam, high = _maps()
    for keys in ([0, 20], [-1, 3]):
        path = tmp_path / f"k{keys[0]}.npz"
        save_cam(str(path), keys, cam, high)
        with _raises_naming(path):
            load_cam(str(path), n_classes=20)  # the dataset's class count bounds the keys
    load_cam(str(tmp_path / "k0.npz"), n_classes=80)  # key 20 is fine with 80 classes
    with _raises_naming(tmp_path / "k-1.npz"):
        load_cam(str(tmp_path / "k-1.npz"))  # negative keys: bad whatever the class count


def test_shape_mismatch(tmp_path):
    cam, high = _maps(k=3)
    path = tmp_path / "x.npz"
    save_cam(str(path), [1, 2], cam, high)  # 2 keys, 3 maps
    with _raises_naming(path):
        load_cam(str(path))
    path2 = tmp_path / "y.npz"
    save_cam(str(path2), [1, 2, 3], cam, high[0])  # 2-d high_res
    with _raises_naming(path2):
        load_cam(str(path2))


def test_missing_arrays(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.savez(f, keys=np.array([1], np.int16), cam=np.zeros((1, 2, 2), np.float16))
    with _raises_naming(path, ".*high_res"):
        load_cam(str(path))


def test_truncated_and_missing_file(tmp_path):
    cam, high = _maps()
    path = tmp_path / "x.npz"
    save_cam(str(path), [1, 2], cam, high)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with _raises_naming(path):
        load_cam(str(path))
    path.write_bytes(b"")
    with _raises_naming(path):
        load_cam(str(path))
    with _raises_naming(tmp_path / "none.npz", ".*missing"):
        load_cam(str(tmp_path / "none.npz"))


def test_disk_full_is_a_pipeline_error(tmp_path, monkeypatch):
    import errno

    def full(f, **arrays):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cam_io.np, "savez_compressed", full)
    path = tmp_path / "x.npz"
    cam, high = _maps()
    with _raises_naming(path, ".*no space"):
        save_cam(str(path), [1, 2], cam, high)
    assert os.listdir(tmp_path) == []
