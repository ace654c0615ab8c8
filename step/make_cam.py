"""Step make_cam: multi-scale + flip ResNet CAMs of the infer list (scales resized with PIL
--cam_resample) -> result/cam/<id>.npz.
Full-size maps by --cam_upsample: round16 (the reference: each scale resized to the size
rounded up to a multiple of 16, then cropped) or direct (straight to the image size)."""
from net.resnet_cam import multiscale_cams, trained_cam_net
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_cam_net(args.cam_backbone, dataset(args).n_classes,
                            output("cam.pth").path(args))
    model.to(args.device).eval()
    round_up = 16 if args.cam_upsample == "round16" else 1

    def cams(item):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        return multiscale_cams(model, imgs, item["size"], item["keys"], round_up)  # fp32
    return process_images(args, "cam", lambda ds, ids: MultiScaleDataset(
        ds, ids, args.cam_scales, resample=args.cam_resample), cams)
