"""The one image reader and label-PNG reader/writer of the project, plus array transforms."""
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.metrics import IGNORE


def _open(path, what):
    try:
        im = Image.open(path)
        im.load()  # decode now so a truncated file fails here, not later
        return im
    except FileNotFoundError as e:
        raise PipelineError(f"{path}: {what} not found; check --voc12_root and the list file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise PipelineError(f"{path}: cannot decode {what} ({e}); replace the file "
                            f"or remove its id from the list") from e


def read_image(path):
    """Read any JPEG/PNG (grayscale, CMYK, palette included) as an HxWx3 uint8 RGB array."""
    return np.asarray(_open(path, "image").convert("RGB"))


def image_size(path):
    """(height, width) of an image file without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError as e:
        raise PipelineError(f"{path}: image not found; check --voc12_root and the list file") from e
    except (UnidentifiedImageError, OSError) as e:
        raise PipelineError(f"{path}: cannot read image header ({e}); replace the file") from e


def read_label(path):
    """Read a label PNG (palette or single-channel) as an HxW uint8 array of class ids."""
    im = _open(path, "label PNG")
    if im.mode not in ("P", "L"):
        raise PipelineError(f"{path}: label PNG has mode {im.mode}; expected a palette (P) or "
                            f"single-channel (L) PNG of class ids")
    return np.asarray(im)


def voc_palette(n=256):
    """The VOC colour map: bits of the label id spread over R, G, B from the high bit down."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def save_label_png(path, label, palette=True):
    """Write an HxW uint8 label map atomically, as a VOC palette PNG or a single-channel PNG."""
    im = Image.fromarray(np.asarray(label, np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette(voc_palette().flatten().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def save_jpeg(path, img, quality=90):
    """Write an HxWx3 uint8 RGB array as a JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="JPEG", quality=quality)


# ---- transforms on HxWxC arrays
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def normalize(img):
    """uint8 RGB -> float32, ImageNet mean/std."""
    return (np.asarray(img, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def hwc_to_chw(img):
    return np.ascontiguousarray(np.transpose(img, (2, 0, 1)))


def resize(img, h, w, area=False):
    """OpenCV bilinear (or area-averaging, for clean downsampling) resize to h x w."""
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def pil_resize(img, h, w, resample="bilinear"):
    """PIL resize of a uint8 image to h x w, as the reference resizes its inputs: PIL's
    bilinear and bicubic filters widen with the scale when shrinking (antialiased)."""
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), _PIL_FILTERS[resample]))


def rescale(img, scale, resample="bilinear"):
    """PIL resize by a factor (sides rounded as Python rounds), at least 1 pixel per side."""
    if scale == 1:
        return img
    h, w = img.shape[:2]
    return pil_resize(img, max(1, round(h * scale)), max(1, round(w * scale)), resample)


def random_resize_long(img, low, high, rng):
    """Resize (PIL bicubic, the reference's) so that the long side is a random integer in
    [low, high]."""
    target = int(rng.integers(low, high + 1))
    return rescale(img, target / max(img.shape[:2]), "bicubic")


def color_jitter(img, jitter, rng):
    """torchvision's ColorJitter(brightness, contrast, saturation, hue) on a uint8 image,
    its factors and its random order of the four adjustments drawn from `rng` (so the
    augmentation stays a function of the seed). jitter: (b, c, s, h); zeros: off."""
    b, c, s, hue = jitter
    if not (b or c or s or hue):
        return img
    import torchvision.transforms.functional as TF  # local: torchvision is slow to import
    pil = Image.fromarray(img)
    ops = {0: (b, TF.adjust_brightness), 1: (c, TF.adjust_contrast),
           2: (s, TF.adjust_saturation)}
    for i in rng.permutation(4):
        if i == 3:
            if hue:
                pil = TF.adjust_hue(pil, float(rng.uniform(-hue, hue)))
        elif ops[i][0]:
            strength, fn = ops[i]
            pil = fn(pil, float(rng.uniform(max(0.0, 1 - strength), 1 + strength)))
    return np.asarray(pil)


def random_crop(img, size, rng, pad_value=0, label=None):
    """A size x size crop at a random place; smaller images are padded (after
    normalisation, 0 is the mean colour). With `label` (HxW), the same crop of it is
    returned too, padded with 255 (ignore): (img_crop, label_crop)."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))  # source
    oy, ox = int(rng.integers(0, size - ch + 1)), int(rng.integers(0, size - cw + 1))  # target

    def crop(a, fill):
        out = np.full((size, size) + a.shape[2:], fill, a.dtype)
        out[oy:oy + ch, ox:ox + cw] = a[y0:y0 + ch, x0:x0 + cw]
        return out
    return crop(img, pad_value) if label is None else (crop(img, pad_value), crop(label, IGNORE))


def majority_downsample(label, h, w, ignore=IGNORE):
    """Downsample a label map to h x w by an area-weighted vote over one-hot labels: each
    output cell takes the label covering most of its area; 255 does not vote (a cell
    with no labelled pixel becomes 255). A blob smaller than a cell is outvoted. Votes
    run over the labels present only, so the cost does not grow with the class count."""
    present = np.unique(label[label != ignore])
    if present.size == 0:
        return np.full((h, w), ignore, np.uint8)
    votes = np.stack([cv2.resize((label == c).astype(np.float32), (w, h),
                                 interpolation=cv2.INTER_AREA) for c in present], -1)
    out = present[votes.argmax(-1)].astype(np.uint8)  # ties: the lowest label id, as before
    out[votes.max(-1) <= 0] = ignore
    return out


def resize_label(label, h, w):
    """Nearest-neighbour resize of a label map (ids never blend)."""
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
