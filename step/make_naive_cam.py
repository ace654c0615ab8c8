"""Step make_naive_cam: the naive-ensemble baseline, mean of the full-size maps of the
sources of --orand_sources plus their offsets (not clipped), ReLU, per-class max
normalisation; stride-4 maps resized from it -> result/naive_cam/<id>.npz. (What the
paper's naive row averaged is not recoverable from the reference: docs/FIDELITY.md.)"""
from misc.cam_io import downsample_cam
from misc.orand import naive_ensemble
from pipeline.camdata import SourcesDataset
from pipeline.images import process_images
from pipeline.registry import source_calibrations


def run(args):
    sources = source_calibrations(args.orand_sources, args)

    def naive(item):
        return downsample_cam(naive_ensemble([high for _, high in item["maps"]]))
    return process_images(args, "naive_cam",
                          lambda ds, ids: SourcesDataset(ds, ids, sources, clip=False), naive)
