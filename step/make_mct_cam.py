"""Step make_mct_cam: MCTformer-V2's maps of the infer list at each image's own
resolution with its flip (net/mctformer.py mct_cams): class-to-patch attention of the
last --mct_layers blocks x ReLU(PatchCAM), refined by the patch-to-patch attention of
every block (--mct_refine), resized to full size, min-max per class; the stride-4 map is
the full-size map resized -> result/mct_cam/<id>.npz."""
from misc.cam_io import downsample_cam
from net.mctformer import mct_cams, trained_mct
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_mct(args.mct_backbone, args.mct_img_size, args.mct_patch_size,
                        args.mct_depth, dataset(args).n_classes, output("mct.pth").path(args))
    model.to(args.device).eval()

    def cams(item):
        img = item["imgs"][0].to(args.device, non_blocking=True)
        return downsample_cam(mct_cams(model, img, item["keys"], args.mct_layers,
                                       args.mct_refine))  # fp32
    return process_images(args, "mct_cam", lambda ds, ids: MultiScaleDataset(ds, ids), cams)
