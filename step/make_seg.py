"""Step make_seg: segmenter predictions for every split of --seg_splits (e.g. val,test):
multi-scale + flip softmax average, optional dense CRF (--seg_crf, in --num_workers
processes while the device predicts the next images), palette PNGs
-> result/<seg_tag>/<split>/<id>.png."""
import os

from misc.crf import crf_probs
from net.deeplab import seg_probs, trained_seg_net
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    ds = dataset(args)
    model = trained_seg_net(args.seg_tag, args.seg_backbone, args.seg_fov, args.seg_width,
                            ds.n_classes + 1, output("{seg_tag}.pth").path(args))
    model.to(args.device).eval()

    def predict(item):
        probs = seg_probs(model, item["imgs"], tuple(item["size"]), args.device)
        if args.seg_crf:  # crf_probs's arguments: it runs in --num_workers processes
            return item["raw"].numpy(), probs.cpu().numpy()
        return probs.argmax(0)
    out = []
    for split in args.seg_splits.split(","):
        ids = ds.ids(split)
        ds.check_images(ids)
        out.append(f"{split}: " + process_images(
            args, os.path.join(args.seg_tag, split),
            lambda d, todo: MultiScaleDataset(d, todo, args.seg_infer_scales, raw=args.seg_crf),
            predict, ids=ids, ext=".png", post=crf_probs if args.seg_crf else None))
    return "; ".join(out)
