"""Step make_vwe_cam: VWE's CAMs of the infer list, the ResNet CAMs of its class head
(net/resnet_cam.py multiscale_cams): --cam_scales resized with PIL --vwe_resample, at
each scale the image's map and its flip's merged by --vwe_flip_merge (max: the
reference), summed over scales; full-size maps by --vwe_upsample (direct: the
reference) -> result/vwe_cam/<id>.npz."""
from net.resnet_cam import multiscale_cams
from net.vwe import trained_vwe
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_vwe(args.cam_backbone, dataset(args).n_classes, args.vwe_words,
                        output("vwe.pth").path(args))
    model.to(args.device).eval()
    round_up = 16 if args.vwe_upsample == "round16" else 1

    def cams(item):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        return multiscale_cams(model, imgs, item["size"], item["keys"], round_up,
                               args.vwe_flip_merge)  # fp32
    return process_images(args, "vwe_cam", lambda ds, ids: MultiScaleDataset(
        ds, ids, args.cam_scales, resample=args.vwe_resample), cams)
