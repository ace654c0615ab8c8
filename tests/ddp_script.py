"""Run by the distributed tests under torchrun (or plainly): trains the CAM net a few
iterations with the shared loop and saves this rank's weights and loss curve."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from misc.torchutils import dist_env, resolve_device  # noqa: E402
from misc.trainer import FitConfig, fit, poly_lr  # noqa: E402
from pipeline.classifier import multilabel_loss  # noqa: E402
from net.resnet_cam import CAMNet, weights_meta  # noqa: E402
from voc12.dataloader import VOC, TrainDataset  # noqa: E402


def main(root, out, batch_size, iters):
    rank, world, _ = dist_env()
    dev = resolve_device("cpu")
    torch.manual_seed(0)
    # frozen BN: batch statistics would differ between a batch of 4 and two batches of 2
    model = CAMNet(20, "resnet18", freeze_bn=True, freeze_stem=False)
    backbone, head = model.param_groups()
    opt = torch.optim.SGD([{"params": backbone}, {"params": head, "lr": 0.1}], lr=0.01)
    data = TrainDataset(VOC(root), VOC(root).ids("train_aug"), 64, (48, 80), seed=0)
    cfg = FitConfig(name="cam", sess_dir=os.path.join(out, "sess"), device=dev, max_iters=iters,
                    batch_size=batch_size, meta=weights_meta("resnet18", 20))
    s = fit(model, opt, poly_lr(opt, iters), data,
            lambda net, b: multilabel_loss(net(b["img"]), b["label"]), cfg)
    torch.save({"model": model.state_dict(), "losses": s["losses"]},
               os.path.join(out, f"rank{rank}_of{world}.pt"))
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
