"""Step make_orandnet_cam: ORANDNet maps of the infer list from their OR maps, all
class maps of an image in one batch; non-negative output, per-class max normalisation
-> result/orandnet_cam/<id>.npz."""
import os

from misc.inference import process_images
from misc.orand import CamFolderDataset
from misc.trainer import load_weights
from net.orandnet import build_orandnet, orandnet_cams, weights_meta


def run(args):
    model = build_orandnet(args.orand_net, "none")
    load_weights(model, os.path.join(args.sess_dir, "orandnet.pth"),
                 weights_meta(args.orand_net, args.orand_loss))
    model.to(args.device).eval()
    or_dir = os.path.join(args.result_dir, "or_cam")
    return process_images(
        args, "orandnet_cam", lambda voc, ids: CamFolderDataset(voc, ids, or_dir),
        lambda item: orandnet_cams(model, item["maps"], args.orand_loss, args.device))
