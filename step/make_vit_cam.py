"""Step make_vit_cam: ViT CAMs (LRP transformer attribution, gradient-weighted rollout or
Grad-CAM) of the infer list, min-max normalised per class on the patch grid, then resized
-> result/vit_cam/<id>.npz."""
from misc.cam_io import normalize_minmax, to_cam_sizes
from net.vit_cam import trained_vit, vit_cams
from pipeline import dataset
from pipeline.images import process_images
from pipeline.registry import output
from voc12.dataloader import MultiScaleDataset


def run(args):
    model = trained_vit(args.vit_backbone, args.vit_img_size, args.vit_patch_size, args.vit_depth,
                        dataset(args).n_classes, output("vit.pth").path(args))
    model.to(args.device).eval()

    def cams(item):
        x = item["imgs"][0][None].to(args.device, non_blocking=True)
        maps = vit_cams(model, x, item["keys"], args.vit_cam_method)  # fp32, as the reference
        # min-max on the patch grid, then resized: full-size maxima stay below 1 (reference)
        return to_cam_sizes(normalize_minmax(maps), item["size"])
    return process_images(
        args, "vit_cam", lambda ds, ids: MultiScaleDataset(ds, ids, square=args.vit_img_size),
        cams)
