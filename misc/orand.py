"""Combining CAM sources, shared by make_orand and make_naive_cam: `--orand_sources`
parsing, loading one image's maps from every source with agreement checks, the
probabilistic OR / AND and the naive ensemble."""

import numpy as np
import torch

from misc.cam_io import cam_path, load_cam, normalize_max
from misc.errors import PipelineError
from misc.fileio import result_folder


def parse_sources(spec, result_dir):
    """'cam,vit_cam:0.15' -> [(folder path, offset)]; bare names live under result_dir."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        path, _, off = part.rpartition(":") if ":" in part else (part, "", "0")
        try:
            off = float(off)
        except ValueError:
            raise PipelineError(f"--orand_sources: offset of '{part}' is not a number") from None
        out.append((result_folder(path, result_dir), off))
    if len(out) < 2:
        raise PipelineError(f"--orand_sources '{spec}': need at least two CAM folders")
    return out


def load_sources(sources, img_id, keys, clip=True):
    """Each source's maps of one image plus its offset, clipped to [0, 1] unless clip is
    False: [(cam, high_res)]. Keys must match the image's labels, sizes each other."""
    maps, first = [], None
    for folder, offset in sources:
        path = cam_path(folder, img_id)
        c = load_cam(path, keys)
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
        maps.append(tuple(np.clip(c[k] + offset, lo, hi) for k in ("cam", "high_res")))
    return first[1]["keys"], maps


def prob_or(maps):
    """1 - prod(1 - c_i): high where any source fires (recall)."""
    return 1 - np.prod([1 - m for m in maps], axis=0)


def prob_and(maps):
    """prod(c_i): high only where every source fires (precision)."""
    return np.prod(maps, axis=0)


def naive_ensemble(maps):
    """Mean of the (offset, unclipped) sources, ReLU, each class divided by its max."""
    return normalize_max(np.maximum(np.mean(maps, axis=0), 0))


class SourcesDataset(torch.utils.data.Dataset):
    """Per image: id, keys and every source's (cam, high_res) maps (see load_sources)."""

    def __init__(self, voc, ids, sources, clip=True):
        self.ids, self.sources, self.clip = list(ids), sources, clip
        self.labels = voc.labels(self.ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        i = self.ids[idx]
        keys, maps = load_sources(self.sources, i, self.labels[i], self.clip)
        return {"id": i, "keys": keys, "maps": maps}


class OrAndPairs(torch.utils.data.Dataset):
    """ORANDNet training pairs: one image's full-size OR maps (input) and AND maps (target),
    indexed by (epoch, index) for the shared loop."""

    def __init__(self, voc, ids, or_dir, and_dir):
        self.x, self.y = CamFolderDataset(voc, ids, or_dir), CamFolderDataset(voc, ids, and_dir)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        return {"or": self.x[key[1]]["maps"], "and": self.y[key[1]]["maps"]}


class CamFolderDataset(torch.utils.data.Dataset):
    """Per image of a CAM folder: id, keys and full-size maps (K,H,W) as a tensor."""

    def __init__(self, voc, ids, folder):
        self.ids, self.folder, self.labels = list(ids), folder, voc.labels(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        i = self.ids[idx]
        c = load_cam(cam_path(self.folder, i), self.labels[i])
        return {"id": i, "keys": c["keys"], "maps": torch.from_numpy(c["high_res"])}
