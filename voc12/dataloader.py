"""Reader of a VOC-layout root (PASCAL VOC 2012, the toy VOC, or a user's own data with
a classes.txt): class list, split lists, image-level labels from the XML annotations
(cached under result/), images, masks, and the torch datasets the steps train and
infer on."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import torch
from tqdm import tqdm

from misc import imutils
from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.metrics import IGNORE
from voc12.classes import VOC_CLASSES

SPLITS = ("train", "val", "test", "trainval", "train_aug")
CLASSES_FILE = "classes.txt"
SERVER_DIR = "results/VOC2012/Segmentation/comp6_test_cls"  # the PASCAL server's layout


def check_mask(path, m, size, n_classes):
    """A ground-truth mask (HxW uint8) read from `path`, checked against its image's size
    (H, W) and the label range 0..n_classes plus 255; every reader's masks go through here."""
    if m.shape != tuple(size):
        raise PipelineError(f"{path}: mask size {m.shape[1]}x{m.shape[0]} differs from its "
                            f"image {size[1]}x{size[0]}; restore the mask or the image")
    bad = np.setdiff1d(np.unique(m), np.r_[np.arange(n_classes + 1), IGNORE])
    if bad.size:
        raise PipelineError(f"{path}: label ids {bad.tolist()} outside 0-{n_classes} and "
                            f"{IGNORE} ({n_classes} classes); is it an RGB-coloured "
                            f"mask? masks hold class ids")
    return m


def check_images(ds, ids):
    """Fail early, naming the first id whose JPEG (ds.image_path) is missing."""
    for i in ids:
        if not os.path.isfile(ds.image_path(i)):
            raise PipelineError(f"{ds.image_path(i)}: image of id '{i}' not found; "
                                f"remove the id from the list or restore the image")


class VOC:
    """A VOC-layout root: `VOC(root, cache_dir)`. Its classes are VOC's 20, or those of
    `<root>/classes.txt` (one name per line, label id = line number). class_names (the
    foreground classes), n_classes, label_names (background first), palette, title (for
    reports) and test_server (the evaluation server's layout, None for own data) come
    from here, never from a global. Every missing piece raises PipelineError."""

    def __init__(self, root, cache_dir=None):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.cache_dir = cache_dir
        if not os.path.isdir(self.root):
            raise PipelineError(f"{self.root}: VOC root not found; pass --voc12_root pointing at "
                                f"the VOC2012 folder (the one holding JPEGImages/), or use --demo")
        for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Segmentation")):
            if not os.path.isdir(os.path.join(self.root, sub)):
                raise PipelineError(f"{os.path.join(self.root, sub)}: folder missing; --voc12_root "
                                    f"must be the VOC2012 folder holding JPEGImages/, Annotations/ "
                                    f"and ImageSets/Segmentation/")
        self.class_names = self._read_classes()
        self.n_classes = len(self.class_names)
        self.label_names = ("background",) + self.class_names
        self.palette = imutils.voc_palette()
        own = self.class_names != VOC_CLASSES
        self.title = f"{os.path.basename(self.root)} ({self.n_classes} classes)" if own else \
            "PASCAL VOC 2012"
        self.test_server = None if own else SERVER_DIR  # where make_submission packs test PNGs
        self._class_index = {c: i for i, c in enumerate(self.class_names)}
        self._labels = None

    def _read_classes(self):
        """VOC's classes, or the root's classes.txt (checked: unique names, at most 254)."""
        path = os.path.join(self.root, CLASSES_FILE)
        if not os.path.exists(path):
            return VOC_CLASSES
        with open(path) as f:
            names = tuple(line.strip() for line in f if line.strip())
        dup = sorted({n for n in names if names.count(n) > 1})
        if not names or dup or "background" in names or len(names) > 254:
            raise PipelineError(f"{path}: expected one foreground class name per line (unique, "
                                f"1 to 254 names, no 'background': label 0 is implicit); "
                                f"found {len(names)} names{', repeated: ' + str(dup) if dup else ''}")
        return names

    # ---- paths
    def image_path(self, img_id):
        return os.path.join(self.root, "JPEGImages", f"{img_id}.jpg")

    def mask_path(self, img_id):
        """The aug mask when there is one, else the VOC mask, else None."""
        for sub in ("SegmentationClassAug", "SegmentationClass"):
            p = os.path.join(self.root, sub, f"{img_id}.png")
            if os.path.exists(p):
                return p
        return None

    # ---- lists
    def ids(self, split):
        """Image ids of a split name (train, val, test, trainval, train_aug) or a list file."""
        if split == "train_aug":
            aug_dir = os.path.join(self.root, "SegmentationClassAug")
            if not os.path.isdir(aug_dir):
                raise PipelineError(f"{aug_dir}: folder missing; train_aug needs the SBD 'aug' masks "
                                    f"(SegmentationClassAug), or use --train_list train")
            aug = {f[:-4] for f in os.listdir(aug_dir) if f.endswith(".png")}
            ids = sorted((aug | set(self.ids("train"))) - set(self.ids("val")))
        else:
            path = split if split not in SPLITS else \
                os.path.join(self.root, "ImageSets", "Segmentation", f"{split}.txt")
            if not os.path.isfile(path):
                raise PipelineError(f"{path}: list file not found; pass a split name "
                                    f"({', '.join(SPLITS)}) or the path of a file of image ids")
            with open(path) as f:
                ids = [line.split()[0] for line in f if line.strip()]
        if not ids:
            raise PipelineError(f"list '{split}' of {self.root} is empty; check the list file")
        return ids

    def check_images(self, ids):
        """Fail early, naming the first id whose JPEG is missing."""
        check_images(self, ids)

    # ---- labels
    def labels(self, ids):
        """{id: sorted 0-based foreground classes}, parsed from Annotations/ and cached."""
        if self._labels is None:
            self._labels = self._load_cache()
        todo = [i for i in ids if i not in self._labels]
        if todo:
            for i in tqdm(todo, desc="parse XML labels", disable=len(todo) < 200, leave=False):
                self._labels[i] = self._parse_xml(i)
            self._save_cache()
        return {i: self._labels[i] for i in ids}

    def _parse_xml(self, img_id):
        path = os.path.join(self.root, "Annotations", f"{img_id}.xml")
        if not os.path.isfile(path):
            raise PipelineError(f"{path}: annotation of id '{img_id}' not found; image-level "
                                f"labels come from Annotations/*.xml")
        try:
            names = [o.findtext("name").strip() for o in ET.parse(path).getroot().iter("object")]
        except (ET.ParseError, AttributeError) as e:
            raise PipelineError(f"{path}: cannot parse annotation XML ({e}); restore the file "
                                f"from the VOC archive") from e
        unknown = sorted(set(names) - set(self._class_index))
        if unknown:
            where = f"{self.root}/{CLASSES_FILE}" if self.class_names != VOC_CLASSES else \
                "the VOC class names"
            raise PipelineError(f"{path}: unknown class names {unknown}; expected one of "
                                f"{where} (add them there, or fix the XML)")
        return np.array(sorted({self._class_index[n] for n in names}), np.int64)

    def _cache_file(self):
        return os.path.join(self.cache_dir, "cls_labels.npz") if self.cache_dir else None

    def _load_cache(self):
        path = self._cache_file()
        if not path or not os.path.exists(path):
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["root"]) != self.root or tuple(z["classes"].tolist()) != self.class_names:
                    return {}  # a cache of another root or class list
                # each z[...] decompresses its whole array: read once, not once per image
                hot = z["labels"]
                return {i: row.nonzero()[0] for i, row in zip(z["ids"].tolist(), hot)}
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt, never trusted

    def _save_cache(self):
        path = self._cache_file()
        if not path:
            return
        ids = sorted(self._labels)
        hot = np.zeros((len(ids), self.n_classes), np.uint8)
        for n, i in enumerate(ids):
            hot[n, self._labels[i]] = 1
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, root=np.array(self.root), classes=np.array(self.class_names),
                     ids=np.array(ids), labels=hot)

    # ---- pixels
    def image(self, img_id):
        return imutils.read_image(self.image_path(img_id))

    def mask(self, img_id):
        """Ground-truth mask (HxW uint8), checked against its image's size and label range."""
        path = self.mask_path(img_id)
        if path is None:
            raise PipelineError(f"no ground-truth mask for id '{img_id}' in "
                                f"{self.root}/SegmentationClass(Aug); evaluate on a list with "
                                f"masks (train or val)")
        return check_mask(path, imutils.read_label(path),
                          imutils.image_size(self.image_path(img_id)), self.n_classes)


class TrainDataset(torch.utils.data.Dataset):
    """Augmented (image, multi-hot label over the dataset's classes) pairs for classifier
    training, as the reference augments them: random long side (PIL bicubic), horizontal
    flip, colour jitter (brightness, contrast, saturation, hue; zeros: off), ImageNet
    normalisation, random crop (padded with 0 = the mean colour). Indexed by
    (epoch, index) so augmentation is a pure function of (seed, epoch, index): the same
    whatever the number of workers, ranks or resumes."""

    def __init__(self, voc, ids, crop_size, resize_long, seed=0, jitter=(0, 0, 0, 0)):
        self.voc, self.ids, self.seed = voc, list(ids), seed
        self.crop_size, self.resize_long, self.jitter = crop_size, resize_long, tuple(jitter)
        self.labels = voc.labels(self.ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, key):
        epoch, idx = key[:2]
        rng = np.random.default_rng((self.seed, epoch, idx))
        img_id = self.ids[idx]
        img = imutils.random_resize_long(self.voc.image(img_id), *self.resize_long, rng)
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
        img = imutils.color_jitter(img, self.jitter, rng)
        img = imutils.random_crop(imutils.normalize(img), self.crop_size, rng)
        label = np.zeros(self.voc.n_classes, np.float32)
        label[self.labels[img_id]] = 1
        return {"img": torch.from_numpy(imutils.hwc_to_chw(img)), "label": torch.from_numpy(label)}


def parse_schedule(spec):
    """'0.5:0.3,0.75:0.3,1.0:0.4' (scale : share of iterations) -> [(scale, share)]."""
    try:
        sched = [(float(a), float(b)) for a, b in (p.split(":") for p in spec.split(","))]
    except ValueError:
        raise PipelineError(f"--seg_scale_schedule '{spec}': expected scale:share,...") from None
    if abs(sum(b for _, b in sched) - 1) > 1e-6 or any(not 0 < a <= 1 for a, _ in sched):
        raise PipelineError(f"--seg_scale_schedule '{spec}': shares must sum to 1 and scales "
                            f"lie in (0, 1]")
    return sched


def scale_at(schedule, it, max_iters):
    """The curriculum scale of iteration `it` of max_iters."""
    end = 0.0
    for scale, share in schedule:
        end += share * max_iters
        if it < round(end):
            return scale
    return schedule[-1][0]


class LabelTrainDataset(torch.utils.data.Dataset):
    """Augmented (image, label map) pairs for dense training, labels read from
    `label_dir/<id>.png` (or the ground truth when label_dir is None). With a curriculum
    `schedule`, image and label are first downsampled to the iteration's scale (label by
    majority vote, so blobs smaller than a cell vanish); then random rescale in
    scale_range (resample "cv2": OpenCV bilinear / nearest; "pil": PIL bicubic / nearest,
    IRN's and AMN's), flip, crop (label padded with 255). With `classes`, the image's
    multi-hot class vector comes along ("classes"). With `scale_crop`, the crop shrinks with
    the curriculum scale (round(crop_size x scale)), so it covers the same share of the
    image at every scale instead of padding the downsampled pairs. Indexed by (epoch, index,
    iteration): augmentation depends only on (seed, epoch, index)."""

    def __init__(self, voc, ids, label_dir, crop_size, scale_range=(1.0, 1.0), seed=0,
                 schedule=None, max_iters=1, resample="cv2", classes=False, scale_crop=False):
        self.voc, self.ids, self.label_dir, self.seed = voc, list(ids), label_dir, seed
        self.crop_size, self.scale_range = crop_size, scale_range
        self.schedule, self.max_iters = schedule, max_iters
        self.resample, self.scale_crop = resample, scale_crop
        self.classes = voc.labels(self.ids) if classes else None

    def __len__(self):
        return len(self.ids)

    def label(self, img_id):
        if self.label_dir is None:
            return self.voc.mask(img_id)
        return imutils.read_label(os.path.join(self.label_dir, f"{img_id}.png"))

    def __getitem__(self, key):
        epoch, idx, it = key
        rng = np.random.default_rng((self.seed, epoch, idx))
        img_id = self.ids[idx]
        img, label = self.voc.image(img_id), self.label(img_id)
        c = scale_at(self.schedule, it, self.max_iters) if self.schedule else 1.0
        if c != 1:
            h, w = max(1, round(img.shape[0] * c)), max(1, round(img.shape[1] * c))
            img, label = imutils.resize(img, h, w, area=True), imutils.majority_downsample(label, h, w)
        s = rng.uniform(*self.scale_range)
        if s != 1:
            h, w = max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))
            if self.resample == "pil":
                img, label = imutils.pil_resize(img, h, w, "bicubic"), \
                    imutils.pil_resize(label, h, w, "nearest")
            else:
                img, label = imutils.resize(img, h, w), imutils.resize_label(label, h, w)
        if rng.random() < 0.5:
            img, label = img[:, ::-1], label[:, ::-1]
        crop = max(1, round(self.crop_size * c)) if self.scale_crop else self.crop_size
        img, label = imutils.random_crop(imutils.normalize(img), crop, rng, label=label)
        out = {"img": torch.from_numpy(imutils.hwc_to_chw(img)),
               "label": torch.from_numpy(np.ascontiguousarray(label)).long()}
        if self.classes is not None:
            out["classes"] = torch.zeros(self.voc.n_classes)
            out["classes"][self.classes[img_id]] = 1
        return out


class TransformTrainDataset(torch.utils.data.Dataset):
    """(image, multi-hot label) pairs through a torchvision-style `transform` of PIL images
    (e.g. timm's training transform: random resized crop, flip, RandAugment, random
    erasing). Such transforms draw from the global random, NumPy and torch generators:
    they are reseeded from (seed, epoch, index) for each item and restored afterwards,
    so augmentation stays a function of (seed, epoch, index) and the training loop's own
    random draws are untouched."""

    def __init__(self, voc, ids, transform, seed=0):
        self.voc, self.ids, self.transform, self.seed = voc, list(ids), transform, seed
        self.labels = voc.labels(self.ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, key):
        import random
        from PIL import Image
        epoch, idx = key[:2]
        img_id = self.ids[idx]
        s = int(np.random.SeedSequence((self.seed, epoch, idx)).generate_state(1)[0])
        py, npy = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(s)
                np.random.seed(s)
                torch.manual_seed(s)
                img = self.transform(Image.fromarray(self.voc.image(img_id)))
        finally:
            random.setstate(py)
            np.random.set_state(npy)
        label = torch.zeros(self.voc.n_classes)
        label[self.labels[img_id]] = 1
        return {"img": img, "label": label}


class MultiScaleDataset(torch.utils.data.Dataset):
    """One image at several scales (normalised CHW tensors; each scale resized from the
    uint8 image with PIL `resample`: bilinear as ORANDNet, bicubic as IRN and AMN) plus
    its id, size and classes. With `square`, the image is instead normalised, then resized to square x square (bilinear,
    antialiased when shrinking: torchvision's Resize on a tensor, the reference's ViT
    input); with `raw`, the uint8 image comes along (for a CRF)."""

    def __init__(self, voc, ids, scales=(1.0,), square=None, raw=False, resample="bilinear"):
        self.voc, self.ids, self.scales, self.square = voc, list(ids), scales, square
        self.raw, self.resample = raw, resample
        self.labels = voc.labels(self.ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        img_id = self.ids[idx]
        img = self.voc.image(img_id)
        size = img.shape[:2]
        if self.square:
            x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(img)))[None]
            ims = [torch.nn.functional.interpolate(x, (self.square, self.square), mode="bilinear",
                                                   align_corners=False, antialias=True)[0]]
        else:
            ims = [torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(
                imutils.rescale(img, s, self.resample)))) for s in self.scales]
        item = {"id": img_id, "size": size, "keys": self.labels[img_id], "imgs": ims}
        if self.raw:
            item["raw"] = np.array(img)  # writable: the loader turns it into a tensor
        return item
