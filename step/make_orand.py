"""Step make_orand: per labelled class, the probabilistic OR = 1 - prod(1 - c_i) and
AND = prod(c_i) of the full-size maps of the N >= 2 CAM sources of --orand_sources, each
plus its offset (a number, or "auto": calibrated from the sources' evaluation records by
--orand_calibration, pipeline/registry.source_calibrations); not clipped, as the
reference: OR reaches 1 + offset (--orand_clip clips each source to [0, 1] first); the
stride-4 maps are the full-size ones resized
-> result/or_cam/<id>.npz and result/and_cam/<id>.npz."""
import os

from misc.cam_io import downsample_cam
from misc.orand import prob_and, prob_or
from pipeline.camdata import SourcesDataset
from pipeline.images import process_images
from pipeline.registry import source_calibrations


def run(args):
    sources = source_calibrations(args.orand_sources, args)
    print("[make_orand] calibration: " + ", ".join(
        f"{os.path.basename(f)} {off:+.3f}" + (f" ^{pw:.3f}" if pw != 1 else "")
        for f, off, pw in sources))

    def or_and(item):
        highs = [high for _, high in item["maps"]]
        return {"or_cam": downsample_cam(prob_or(highs)),
                "and_cam": downsample_cam(prob_and(highs))}
    return process_images(args, ["or_cam", "and_cam"],
                          lambda ds, ids: SourcesDataset(ds, ids, sources, args.orand_clip), or_and)
