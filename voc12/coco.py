"""Reader of an MS COCO 2014 root (the real one or the toy COCO), with the VOC reader's
interface: the classes (80 categories of the instance JSON; label id = 1 + rank of the
category id, background 0), split lists, image-level labels, images and masks.

Layout: train2014/ and val2014/ (JPEGs), annotations/instances_{train,val}2014.json, and
optionally the pre-converted class-index PNGs most WSSS projects use,
SegmentationClass/{train2014,val2014}/<id>.png. Ids are the file stems
(COCO_train2014_000000000009). The JSON is parsed once into an index cached under
result/ (coco_index.npz, refreshed when a JSON changes), so later runs read 123k images'
labels in well under a second.

Masks come by two routes: (a) the pre-converted PNGs, read as they are; (b) the
coco_masks step's own conversion of the JSON (result/coco_masks/<id>.png) by
`semantic_mask`'s rule. A provided (a) mask wins when both exist."""
import contextlib
import io
import json
import os
import warnings

import numpy as np
from tqdm import tqdm

from misc import imutils
from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.metrics import IGNORE
from voc12.dataloader import check_images, check_mask

FOLDERS = ("train2014", "val2014")
SPLITS = {"train": "train2014", "val": "val2014", "train_all": "train2014", "val_all": "val2014"}
PROVIDED_MASKS = "SegmentationClass"
CONVERTED_MASKS = "coco_masks"  # the coco_masks step's folder under result/
INDEX_FILE = "coco_index.npz"
CROWD_RULES = ("class", "ignore")


def json_path(root, folder):
    return os.path.join(root, "annotations", f"instances_{folder}.json")


def is_coco_root(root):
    """Whether `root` has the COCO 2014 layout (an instance JSON or an image folder)."""
    return any(os.path.exists(json_path(root, f)) or os.path.isdir(os.path.join(root, f))
               for f in FOLDERS)


def semantic_mask(instances, h, w, crowd="class"):
    """The conversion rule of route (b), one HxW uint8 class-index map from an image's
    instances [(label id, iscrowd, annotation id, HxW bool mask)]:
      - crowd regions are painted first, then the other instances from the largest area
        (pixel count) to the smallest, equal areas in annotation-id order; a later instance
        overwrites an earlier one, so where instances overlap the smallest one wins (in COCO
        the smaller object usually lies on or in front of the larger: a cup on a table);
      - crowd regions take their class (crowd='class') or 255, ignored (crowd='ignore');
        an instance annotated on its own inside a crowd keeps its class either way;
      - no 255 borders: COCO's masks have none, and neither do the usual converted PNGs;
      - pixels of no instance are background 0; an image without instances is all 0."""
    if crowd not in CROWD_RULES:
        raise PipelineError(f"--coco_crowd {crowd}: expected one of {', '.join(CROWD_RULES)}")
    out = np.zeros((h, w), np.uint8)
    order = sorted(instances, key=lambda t: (not t[1], -int(t[3].sum()), t[2]))
    for label, iscrowd, _, m in order:
        out[m] = IGNORE if iscrowd and crowd == "ignore" else label
    return out


def mask_difference(ours, theirs):
    """How a converted mask differs from a provided one (same size): pixels, pixels whose
    labels differ where neither is 255, pixels 255 in only one of them, and the class ids
    found in only one of them."""
    valid = (ours != IGNORE) & (theirs != IGNORE)
    a, b = (set(np.unique(m).tolist()) - {0, IGNORE} for m in (ours, theirs))
    return {"pixels": int(ours.size), "differ": int((valid & (ours != theirs)).sum()),
            "ignore_only_ours": int(((ours == IGNORE) & (theirs != IGNORE)).sum()),
            "ignore_only_provided": int(((theirs == IGNORE) & (ours != IGNORE)).sum()),
            "classes_only_ours": sorted(a - b), "classes_only_provided": sorted(b - a)}


class COCO:
    """An MS COCO 2014 root: `COCO(root, cache_dir)`. Splits: train and val (the images
    with at least one annotation: 82,081 and 40,137 in COCO 2014, the lists of ORANDNet's
    reference), train_all and val_all (every image, unannotated ones included: all
    background, no labels), or a list file of ids (file stems, or COCO image ids).
    Image-level labels: the categories of all of an image's annotations, crowd regions
    included. Every missing or inconsistent piece raises PipelineError."""

    def __init__(self, root, cache_dir=None):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.cache_dir = cache_dir
        if not os.path.isdir(self.root):
            raise PipelineError(f"{self.root}: COCO root not found; pass --data_root pointing at "
                                f"the folder holding train2014/, val2014/ and annotations/")
        self._jsons = [f for f in FOLDERS if os.path.exists(json_path(self.root, f))]
        if not self._jsons:
            raise PipelineError(f"{json_path(self.root, FOLDERS[0])}: no instance JSON "
                                f"(instances_train2014.json or instances_val2014.json) in "
                                f"{os.path.join(self.root, 'annotations')}; download the COCO "
                                f"2014 annotations")
        ix = self._load_index()
        self.cat_ids = tuple(int(c) for c in ix["cat_ids"])
        self.class_names = tuple(str(n) for n in ix["names"])
        self.n_classes = len(self.class_names)
        self.label_names = ("background",) + self.class_names
        self.palette = imutils.voc_palette()
        self.title = "MS COCO 2014"
        self.test_server = None  # COCO's test server takes no semantic segmentation
        files = ix["files"].tolist()
        self._ids = [os.path.splitext(f)[0] for f in files]
        self._row = {i: n for n, i in enumerate(self._ids)}
        if len(self._row) != len(self._ids):
            raise PipelineError(f"{self.root}/annotations: two images share a file name")
        self._files, self._folder = files, ix["folder"]
        self._image_id, self._hw, self._n_ann = ix["image_id"], ix["hw"], ix["n_ann"]
        self._hot = np.unpackbits(ix["hot"], axis=1, count=self.n_classes).astype(bool)
        self._api = {}

    # ---- the index: the JSON parsed once, cached under result/
    def _stamp(self):
        """What identifies the JSON files the index was made from (name, size, mtime)."""
        return ";".join(f"{f}:{os.path.getsize(p)}:{os.stat(p).st_mtime_ns}"
                        for f in self._jsons for p in [json_path(self.root, f)])

    def _load_index(self):
        path = os.path.join(self.cache_dir, INDEX_FILE) if self.cache_dir else None
        if path and os.path.exists(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    ix = {k: z[k] for k in z.files}
                if str(ix["root"]) == self.root and str(ix["stamp"]) == self._stamp():
                    return ix
            except (OSError, ValueError, KeyError):
                pass  # a damaged index is rebuilt, never trusted
        ix = self._parse()
        if path:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **ix)
        return ix

    def _parse(self):
        cats, rows = None, []
        for folder in self._jsons:
            p = json_path(self.root, folder)
            try:
                with open(p) as f:
                    d = json.load(f)
                c = sorted((int(x["id"]), str(x["name"])) for x in d["categories"])
                images = [(str(m["file_name"]), int(m["id"]), int(m["height"]), int(m["width"]))
                          for m in d["images"]]
                anns = [(int(a["image_id"]), int(a["category_id"])) for a in d["annotations"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise PipelineError(f"{p}: not a COCO instance JSON ({type(e).__name__}: {e}); "
                                    f"download it again") from e
            if cats is None:
                cats = c
            elif c != cats:
                raise PipelineError(f"{p}: its categories differ from those of "
                                    f"{json_path(self.root, self._jsons[0])}; use the two "
                                    f"files of one COCO release")
            if not cats or len(cats) > 254:
                raise PipelineError(f"{p}: {len(cats)} categories; expected 1 to 254")
            col = {cid: k for k, (cid, _) in enumerate(cats)}
            at = {iid: n for n, (_, iid, _, _) in enumerate(images)}
            hot = np.zeros((len(images), len(cats)), bool)
            n_ann = np.zeros(len(images), np.int32)
            for iid, cid in tqdm(anns, desc=f"index {os.path.basename(p)}", leave=False,
                                 disable=len(anns) < 10000):
                if iid not in at or cid not in col:
                    what = f"image id {iid}" if iid not in at else f"category id {cid}"
                    raise PipelineError(f"{p}: an annotation refers to {what}, which the file "
                                        f"does not list; download it again")
                hot[at[iid], col[cid]] = True
                n_ann[at[iid]] += 1
            rows += [(f, FOLDERS.index(folder), iid, h, w, n, hot[k])
                     for k, ((f, iid, h, w), n) in enumerate(zip(images, n_ann))]
        rows.sort(key=lambda r: r[0])
        return {"root": np.array(self.root), "stamp": np.array(self._stamp()),
                "cat_ids": np.array([c for c, _ in cats], np.int64),
                "names": np.array([n for _, n in cats]),
                "files": np.array([r[0] for r in rows]),
                "folder": np.array([r[1] for r in rows], np.int8),
                "image_id": np.array([r[2] for r in rows], np.int64),
                "hw": np.array([(r[3], r[4]) for r in rows], np.int32).reshape(-1, 2),
                "n_ann": np.array([r[5] for r in rows], np.int32),
                "hot": np.packbits(np.array([r[6] for r in rows], bool).reshape(
                    len(rows), len(cats)), axis=1)}

    # ---- paths
    def _at(self, img_id):
        try:
            return self._row[img_id]
        except KeyError:
            raise PipelineError(f"id '{img_id}' is not an image of "
                                f"{', '.join(json_path(self.root, f) for f in self._jsons)}; "
                                f"fix the list") from None

    def folder(self, img_id):
        """train2014 or val2014: where the image and its masks live."""
        return FOLDERS[self._folder[self._at(img_id)]]

    def image_path(self, img_id):
        return os.path.join(self.root, self.folder(img_id), self._files[self._at(img_id)])

    def provided_mask_path(self, img_id):
        return os.path.join(self.root, PROVIDED_MASKS, self.folder(img_id), f"{img_id}.png")

    def converted_mask_path(self, img_id):
        return os.path.join(self.cache_dir or "", CONVERTED_MASKS, f"{img_id}.png")

    def mask_path(self, img_id):
        """The provided (pre-converted) mask when there is one, else the coco_masks step's
        conversion, else None."""
        for p in (self.provided_mask_path(img_id),
                  self.converted_mask_path(img_id) if self.cache_dir else None):
            if p and os.path.exists(p):
                return p
        return None

    # ---- lists
    def ids(self, split):
        """Ids of a split (train, val: annotated images; train_all, val_all: every image)
        or of a list file (first token of each line: a file stem or a COCO image id)."""
        if split in SPLITS:
            folder = SPLITS[split]
            if folder not in self._jsons:
                raise PipelineError(f"{json_path(self.root, folder)}: missing, so there is no "
                                    f"'{split}' split; download it or choose another list")
            code = FOLDERS.index(folder)
            keep = (self._folder == code) & ((self._n_ann > 0) | split.endswith("_all"))
            ids = [self._ids[n] for n in np.flatnonzero(keep)]
        else:
            if not os.path.isfile(split):
                raise PipelineError(f"{split}: list file not found; pass a split name "
                                    f"({', '.join(SPLITS)}) or the path of a file of image ids")
            with open(split) as f:
                tokens = [line.split()[0] for line in f if line.strip()]
            by_number = None
            ids = []
            for t in tokens:
                if t not in self._row and t.isdigit():  # a COCO image id, as some lists hold
                    if by_number is None:
                        by_number = {int(n): i for n, i in zip(self._image_id, self._ids)}
                    t = by_number.get(int(t), t)
                if t not in self._row:
                    raise PipelineError(f"{split}: id '{t}' is not an image of the annotation "
                                        f"files in {self.root}/annotations; fix the list")
                ids.append(t)
        if not ids:
            raise PipelineError(f"list '{split}' of {self.root} is empty; check the list")
        return ids

    def check_images(self, ids):
        """Fail early, naming the first id whose JPEG is missing."""
        check_images(self, ids)

    # ---- labels
    def labels(self, ids):
        """{id: sorted 0-based foreground classes} (empty for an image without annotations)."""
        return {i: np.flatnonzero(self._hot[self._at(i)]) for i in ids}

    # ---- pixels
    def image(self, img_id):
        return imutils.read_image(self.image_path(img_id))

    def mask(self, img_id):
        """Ground-truth mask (HxW uint8) by route (a) or (b), checked against its image's
        size and the label range; all background for an image without annotations."""
        path = self.mask_path(img_id)
        size = imutils.image_size(self.image_path(img_id))
        if path is None:
            if self._n_ann[self._at(img_id)] == 0:
                return np.zeros(size, np.uint8)
            raise PipelineError(f"no ground-truth mask for id '{img_id}': neither "
                                f"{self.provided_mask_path(img_id)} (pre-converted masks) "
                                f"nor a conversion of the JSON; run step coco_masks first")
        return check_mask(path, imutils.read_label(path), size, self.n_classes)

    # ---- route (b): the JSON converted by semantic_mask's rule
    def load_api(self, folder):
        """pycocotools' index of a folder's JSON (loaded once; the conversion needs it)."""
        if folder not in self._api:
            try:
                from pycocotools.coco import COCO as CocoApi
            except ImportError as e:
                raise PipelineError("converting COCO masks needs pycocotools: pip install "
                                    "pycocotools (it is in requirements.txt)") from e
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
                self._api[folder] = CocoApi(json_path(self.root, folder))
        return self._api[folder]

    def convert_mask(self, img_id, crowd="class"):
        """The mask of `img_id` converted from its instance JSON by semantic_mask's rule."""
        n = self._at(img_id)
        api = self.load_api(self.folder(img_id))
        h, w = (int(v) for v in self._hw[n])
        label = {c: k + 1 for k, c in enumerate(self.cat_ids)}
        anns = api.loadAnns(api.getAnnIds(imgIds=int(self._image_id[n]), iscrowd=None))
        try:
            with warnings.catch_warnings():  # pycocotools + numpy 2: a warning per mask
                warnings.simplefilter("ignore", DeprecationWarning)
                inst = [(label[a["category_id"]], bool(a.get("iscrowd", 0)), int(a["id"]),
                         api.annToMask(a).astype(bool)) for a in anns]
        except Exception as e:  # pycocotools raises bare TypeErrors and ValueErrors
            raise PipelineError(f"{json_path(self.root, self.folder(img_id))}: cannot decode "
                                f"a segmentation of image '{img_id}' ({type(e).__name__}: "
                                f"{e}); download the file again") from e
        return semantic_mask(inst, h, w, crowd)
