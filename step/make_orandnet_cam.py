"""Step make_orandnet_cam: ORANDNet maps of the infer list from their OR maps, all
class maps of an image in one batch; non-negative output, per-class max normalisation at
full size, stride-4 maps resized from it -> result/orandnet_cam/<id>.npz."""
from net.orandnet import orandnet_cams, trained_orandnet
from pipeline.camdata import CamFolderDataset
from pipeline.images import process_images
from pipeline.registry import output


def run(args):
    model = trained_orandnet(args.orand_net, args.orand_loss,
                             output("orandnet.pth").path(args), args.orand_fcn)
    model.to(args.device).eval()
    or_dir = output("or_cam").path(args)
    return process_images(
        args, "orandnet_cam", lambda ds, ids: CamFolderDataset(ds, ids, or_dir),
        lambda item: orandnet_cams(model, item["maps"], args.orand_loss, args.device))
