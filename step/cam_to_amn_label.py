"""Step cam_to_amn_label: AMN's training labels, IRN's confident labels from the ResNet
CAMs (result/cam/): dense-CRF foreground at --amn_conf_fg_thres and background at
--amn_conf_bg_thres (AMN: 0.30 / 0.05), 255 where they disagree ->
result/amn_label/<id>.png. A folder of its own: the IRN labels that cam_to_ir_label later
makes from the ORANDNet maps (result/ir_label/) never overwrite them."""
from pipeline import dataset
from pipeline.camdata import ConfidentLabels
from pipeline.images import process_images
from pipeline.registry import output, require


def run(args):
    cams = output("cam")
    require(cams, args, dataset(args).ids(args.infer_list), "CAM files")
    return process_images(
        args, "amn_label",
        lambda ds, ids: ConfidentLabels(ds, ids, cams.path(args), args.amn_conf_fg_thres,
                                        args.amn_conf_bg_thres),
        lambda item: item["label"], ext=".png")
