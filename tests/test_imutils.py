"""Tests of misc.imutils: VOC palette, label PNG writing/reading, random crop and resize."""
import re

import numpy as np
import pytest
from PIL import Image

from misc.errors import PipelineError
from misc.imutils import (image_size, random_crop, random_resize_long, read_label, save_label_png,
                          voc_palette)


def test_voc_palette_colours():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
                5: (128, 0, 128), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for i, rgb in expected.items():
        assert tuple(pal[i]) == rgb, i
    assert len({tuple(c) for c in pal}) == 256  # every id its own colour
    assert np.array_equal(voc_palette(21), pal[:21])


@pytest.mark.parametrize("palette,mode", [(True, "P"), (False, "L")])
def test_save_label_png_round_trip(tmp_path, palette, mode):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (9, 13)).astype(np.uint8)
    label[0, :3] = 255
    path = tmp_path / "m.png"
    save_label_png(str(path), label, palette=palette)
    with Image.open(path) as im:
        assert im.mode == mode and im.size == (13, 9)
        if palette:
            assert np.array_equal(np.array(im.getpalette(), np.uint8).reshape(-1, 3)[:256],
                                  voc_palette())
            # the palette colours shown are the VOC ones
            rgb = np.asarray(im.convert("RGB"))
            assert np.array_equal(rgb, voc_palette()[label])
    back = read_label(str(path))
    assert back.dtype == np.uint8 and np.array_equal(back, label)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    assert image_size(str(path)) == (9, 13)


def test_read_label_refuses_rgb_png(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    with pytest.raises(PipelineError, match=re.escape(str(path)) + ".*RGB"):
        read_label(str(path))


def _find(block, img):
    """Offsets (y, x) where `block` occurs in `img`, or None."""
    bh, bw = block.shape[:2]
    for y in range(img.shape[0] - bh + 1):
        for x in range(img.shape[1] - bw + 1):
            if np.array_equal(img[y:y + bh, x:x + bw], block):
                return y, x
    return None


def test_random_crop_large_image():
    img = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3) + 1
    for seed in range(5):
        out = random_crop(img, 8, np.random.default_rng(seed))
        assert out.shape == (8, 8, 3) and out.dtype == np.float32
        assert _find(out, img) is not None  # a real window of the image, no padding
    a = random_crop(img, 8, np.random.default_rng(1))
    assert np.array_equal(a, random_crop(img, 8, np.random.default_rng(1)))
    assert len({_find(random_crop(img, 8, np.random.default_rng(s)), img) for s in range(10)}) > 1


def test_random_crop_pads_small_sides():
    img = np.arange(10 * 6, dtype=np.uint8).reshape(10, 6) + 1  # 2-d, narrower than the crop
    for seed in range(5):
        out = random_crop(img, 8, np.random.default_rng(seed), pad_value=0)
        assert out.shape == (8, 8) and out.dtype == np.uint8
        assert (out == 0).sum() == 8 * 8 - 8 * 6  # two padded columns
        cols = np.flatnonzero((out != 0).any(0))
        assert len(cols) == 6 and np.ptp(cols) == 5  # contiguous full-width content
        block = out[:, cols]
        assert _find(block, img) is not None
    tiny = np.full((3, 4, 3), 7, np.float32)
    out = random_crop(tiny, 8, np.random.default_rng(0), pad_value=-1)
    assert out.shape == (8, 8, 3)
    assert (out == 7).sum() == 3 * 4 * 3 and (out == -1).sum() == (64 - 12) * 3


def test_random_resize_long():
    img = np.zeros((40, 60, 3), np.uint8)
    longs = set()
    for seed in range(200):
        out = random_resize_long(img, 20, 30, np.random.default_rng(seed))
        h, w = out.shape[:2]
        assert out.shape[2] == 3 and 20 <= max(h, w) <= 30 and w > h
        assert abs(h / w - 40 / 60) < 0.05  # aspect ratio kept
        longs.add(w)
    assert longs == set(range(20, 31))  # both ends of the range are reachable
    tall = random_resize_long(np.zeros((50, 10), np.uint8), 100, 100, np.random.default_rng(0))
    assert tall.shape == (100, 20)
