"""Step make_orand: per labelled class, the probabilistic OR = 1 - prod(1 - c_i) and
AND = prod(c_i) of N >= 2 CAM sources (each plus its offset, clipped to [0, 1])
-> result/or_cam/<id>.npz and result/and_cam/<id>.npz."""
from misc.inference import process_images
from misc.orand import SourcesDataset, parse_sources, prob_and, prob_or


def run(args):
    sources = parse_sources(args.orand_sources, args.result_dir)

    def or_and(item):
        lows, highs = zip(*item["maps"])
        return {"or_cam": (prob_or(lows), prob_or(highs)),
                "and_cam": (prob_and(lows), prob_and(highs))}
    return process_images(args, ["or_cam", "and_cam"],
                           lambda voc, ids: SourcesDataset(voc, ids, sources), or_and)
