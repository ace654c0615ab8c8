"""Step cam_to_ir_label: IRN's confident labels from the CAMs of --sem_seg_cam_dir
(default: the ORANDNet maps): dense-CRF foreground at --conf_fg_thres and background at
--conf_bg_thres, 255 where they disagree -> result/ir_label/<id>.png. The CRF runs in
the --num_workers loader processes."""
from pipeline.camdata import ConfidentLabels
from pipeline.images import process_images
from pipeline.registry import cam_output


def run(args):
    cam_dir = cam_output(args.sem_seg_cam_dir, args).path(args)
    return process_images(
        args, "ir_label",
        lambda ds, ids: ConfidentLabels(ds, ids, cam_dir, args.conf_fg_thres,
                                         args.conf_bg_thres),
        lambda item: item["label"], ext=".png")
