"""Step cam_to_ir_label: IRN's confident labels from the CAMs of --sem_seg_cam_dir
(default: the ORANDNet maps): dense-CRF foreground at --conf_fg_thres and background at
--conf_bg_thres, 255 where they disagree -> result/ir_label/<id>.png. The CRF runs in
the --num_workers loader processes."""
from misc.cam_io import cam_path
from misc.crf import confident_labels
from misc.errors import PipelineError
from pipeline.camdata import CamFolderDataset
from pipeline.images import process_images
from pipeline.registry import cam_output


class _IrLabels(CamFolderDataset):
    """A CAM folder's maps, turned into confident labels on their image (the CRF runs here,
    in the loader's worker processes)."""

    def __init__(self, ds, ids, cam_dir, fg, bg):
        super().__init__(ds, ids, cam_dir)
        self.ds, self.fg, self.bg = ds, fg, bg

    def __getitem__(self, idx):
        c = super().__getitem__(idx)
        img = self.ds.image(c["id"])
        if c["maps"].shape[1:] != img.shape[:2]:
            raise PipelineError(f"{cam_path(self.folder, c['id'])}: map size differs from its "
                                f"image; remake the CAMs of this folder")
        label = confident_labels(img, c["maps"].numpy(), c["keys"], self.fg, self.bg)
        return {"id": c["id"], "label": label}


def run(args):
    cam_dir = cam_output(args.sem_seg_cam_dir, args).path(args)
    return process_images(
        args, "ir_label",
        lambda ds, ids: _IrLabels(ds, ids, cam_dir, args.conf_fg_thres, args.conf_bg_thres),
        lambda item: item["label"], ext=".png")
