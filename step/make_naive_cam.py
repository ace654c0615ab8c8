"""Step make_naive_cam: the naive-ensemble baseline, mean of the sources of
--orand_sources plus their offsets (not clipped, as in the reference), ReLU, per-class
max normalisation -> result/naive_cam/<id>.npz."""
from misc.orand import naive_ensemble
from pipeline.camdata import SourcesDataset
from pipeline.images import process_images
from pipeline.registry import parse_sources


def run(args):
    sources = [(o.path(args), off) for o, off in parse_sources(args.orand_sources, args)]

    def naive(item):
        lows, highs = zip(*item["maps"])
        return naive_ensemble(lows), naive_ensemble(highs)
    return process_images(args, "naive_cam",
                          lambda ds, ids: SourcesDataset(ds, ids, sources, clip=False), naive)
