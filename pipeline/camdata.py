"""Torch datasets over CAM folders: one folder's maps per image, their confident labels,
every OR/AND source's maps per image (checked to agree), and ORANDNet's (OR, AND)
training pairs."""
import numpy as np
import torch

from misc.cam_io import cam_path, load_cam
from misc.crf import confident_labels
from misc.errors import PipelineError
from misc.orand import calibrate


def load_sources(sources, img_id, keys, n_classes, clip=True):
    """Each source's maps of one image calibrated (misc.orand.calibrate), clipped to [0, 1]
    unless clip is False: [(cam, high_res)]. sources: [(folder, offset, power)]. Keys must
    match the image's labels, sizes each other."""
    maps, first = [], None
    for folder, offset, power in sources:
        path = cam_path(folder, img_id)
        c = load_cam(path, keys, n_classes)
        if first is None:
            first = (path, c)
        elif (c["keys"].tolist() != first[1]["keys"].tolist()
              or c["high_res"].shape != first[1]["high_res"].shape
              or c["cam"].shape != first[1]["cam"].shape):
            raise PipelineError(
                f"{path} and {first[0]} disagree (keys {c['keys'].tolist()} vs "
                f"{first[1]['keys'].tolist()}, size {c['high_res'].shape[1:]} vs "
                f"{first[1]['high_res'].shape[1:]}); remake one of them on the same images")
        lo, hi = (0, 1) if clip else (None, None)
        maps.append(tuple(np.clip(calibrate(c[k], offset, power), lo, hi)
                          for k in ("cam", "high_res")))
    return first[1]["keys"], maps


class SourcesDataset(torch.utils.data.Dataset):
    """Per image: id, keys and every source's (cam, high_res) maps (see load_sources)."""

    def __init__(self, ds, ids, sources, clip=True):
        self.ids, self.sources, self.clip = list(ids), sources, clip
        self.labels, self.n_classes = ds.labels(self.ids), ds.n_classes

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        i = self.ids[idx]
        keys, maps = load_sources(self.sources, i, self.labels[i], self.n_classes, self.clip)
        return {"id": i, "keys": keys, "maps": maps}


class CamFolderDataset(torch.utils.data.Dataset):
    """Per image of a CAM folder: id, keys and full-size maps (K,H,W) as a tensor."""

    def __init__(self, ds, ids, folder):
        self.ids, self.folder = list(ids), folder
        self.labels, self.n_classes = ds.labels(self.ids), ds.n_classes

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        i = self.ids[idx]
        c = load_cam(cam_path(self.folder, i), self.labels[i], self.n_classes)
        return {"id": i, "keys": c["keys"], "maps": torch.from_numpy(c["high_res"])}


class ConfidentLabels(CamFolderDataset):
    """A CAM folder's maps turned into IRN's confident labels on their image: dense-CRF
    foreground at background score `fg`, background at `bg`, 255 where they disagree (the
    CRF runs here, in the loader's worker processes)."""

    def __init__(self, ds, ids, cam_dir, fg, bg):
        super().__init__(ds, ids, cam_dir)
        self.ds, self.fg, self.bg = ds, fg, bg

    def __getitem__(self, idx):
        c = super().__getitem__(idx)
        img = self.ds.image(c["id"])
        if c["maps"].shape[1:] != img.shape[:2]:
            raise PipelineError(f"{cam_path(self.folder, c['id'])}: map size differs from its "
                                f"image; remake the CAMs of this folder")
        label = confident_labels(img, c["maps"].numpy(), c["keys"], self.fg, self.bg)
        return {"id": c["id"], "label": label}


class OrAndPairs(torch.utils.data.Dataset):
    """ORANDNet training pairs: one image's full-size OR maps (input) and AND maps (target),
    indexed by (epoch, index) for the shared loop."""

    def __init__(self, ds, ids, or_dir, and_dir):
        self.x, self.y = CamFolderDataset(ds, ids, or_dir), CamFolderDataset(ds, ids, and_dir)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        return {"or": self.x[key[1]]["maps"], "and": self.y[key[1]]["maps"]}
