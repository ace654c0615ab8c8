"""Step make_naive_cam: the naive-ensemble baseline, mean of the sources plus their
offsets (not clipped, as in the reference), ReLU, per-class max normalisation
-> result/naive_cam/<id>.npz."""
from misc.inference import process_images
from misc.orand import SourcesDataset, naive_ensemble, parse_sources


def run(args):
    sources = parse_sources(args.orand_sources, args.result_dir)

    def naive(item):
        lows, highs = zip(*item["maps"])
        return naive_ensemble(lows), naive_ensemble(highs)
    return process_images(args, "naive_cam",
                           lambda voc, ids: SourcesDataset(voc, ids, sources, clip=False), naive)
