"""Step make_cam: multi-scale + flip ResNet CAMs of the infer list -> result/cam/<id>.npz."""
from misc.torchutils import autocast
from net.resnet_cam import multiscale_cams, trained_cam_net
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_cam_net(args.cam_backbone, dataset(args).n_classes,
                            output("cam.pth").path(args))
    model.to(args.device).eval()

    def cams(item):
        imgs = [x.to(args.device, non_blocking=True) for x in item["imgs"]]
        with autocast(args.device):
            return multiscale_cams(model, imgs, item["size"], item["keys"])
    return process_images(args, "cam", lambda ds, ids: MultiScaleDataset(ds, ids, args.cam_scales),
                          cams)
