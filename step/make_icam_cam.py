"""Step make_icam_cam: ICAM's maps of the infer list (net/icam.py icam_cams): --icam_scales
(PIL bicubic, the reference's) with flips, softmax conditioned on the image's labels,
averaged, winner-take-all per pixel, each class over its own max ->
result/icam_cam/<id>.npz. Evaluated at 0.5 (--icam_eval_thres): the reference's
background, 1 - the winner, wins below it."""
from net.icam import icam_cams, trained_icam
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_icam(args.cam_backbone, dataset(args).n_classes, output("icam.pth").path(args),
                         args.icam_head_bias)
    model.to(args.device).eval()

    def cams(item):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        return icam_cams(model, imgs, item["size"], item["keys"])  # fp32
    return process_images(args, "icam_cam", lambda ds, ids: MultiScaleDataset(
        ds, ids, args.icam_scales, resample="bicubic"), cams)
