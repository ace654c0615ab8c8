"""Step cam_to_ir_label: IRN's confident labels from the CAMs of --sem_seg_cam_dir
(default: the ORANDNet maps): dense-CRF foreground at --conf_fg_thres and background at
--conf_bg_thres, 255 where they disagree -> result/ir_label/<id>.png. The CRF runs in
the --num_workers loader processes."""
import torch

from misc.cam_io import cam_path, load_cam
from misc.crf import confident_labels
from misc.errors import PipelineError
from misc.inference import process_images
from misc.orand import result_folder


class _IrLabels(torch.utils.data.Dataset):
    def __init__(self, voc, ids, cam_dir, fg, bg):
        self.voc, self.ids, self.cam_dir, self.fg, self.bg = voc, list(ids), cam_dir, fg, bg
        self.labels = voc.labels(self.ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        i = self.ids[idx]
        c = load_cam(cam_path(self.cam_dir, i), self.labels[i])
        img = self.voc.image(i)
        if c["high_res"].shape[1:] != img.shape[:2]:
            raise PipelineError(f"{cam_path(self.cam_dir, i)}: map size differs from its image; "
                                f"remake the CAMs of this folder")
        return {"id": i, "label": confident_labels(img, c["high_res"], c["keys"], self.fg, self.bg)}


def run(args):
    cam_dir = result_folder(args.sem_seg_cam_dir, args.result_dir)
    return process_images(
        args, "ir_label",
        lambda voc, ids: _IrLabels(voc, ids, cam_dir, args.conf_fg_thres, args.conf_bg_thres),
        lambda item: item["label"], ext=".png")
