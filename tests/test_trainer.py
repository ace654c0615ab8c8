"""The shared training loop's pieces: the batch plan (determinism, sharding, resume
offset), poly schedule, NaN guard, and timm ResNet trunks at output stride 16."""
import os

import numpy as np
import pytest
import torch

from misc.errors import PipelineError
from misc.trainer import BatchPlan, FitConfig, fit, iters_for, poly_lr
from net.resnet_cam import CAMNet


def test_batch_plan_shards_union_is_the_single_process_batch():
    one = list(BatchPlan(20, 4, seed=3, start=0, stop=10))
    r0 = list(BatchPlan(20, 2, seed=3, start=0, stop=10, rank=0, world=2))
    r1 = list(BatchPlan(20, 2, seed=3, start=0, stop=10, rank=1, world=2))
    for a, b, c in zip(one, r0, r1):
        assert a == b + c
    # each epoch visits every index once; epochs reshuffle
    e0 = sorted(i for b in one[:5] for _, i, _ in b)
    assert e0 == list(range(20)) and one[0] != one[5]
    assert {e for b in one[5:] for e, _, _ in b} == {1}
    assert [{t for _, _, t in b} for b in one] == [{t} for t in range(10)]


def test_batch_plan_resume_offset_and_drop_last():
    full = list(BatchPlan(22, 4, seed=0, start=0, stop=12))
    assert list(BatchPlan(22, 4, seed=0, start=7, stop=12)) == full[7:]
    assert BatchPlan(22, 4, 0, 0, 1).per_epoch == 5 and iters_for(22, 3, 4) == 15
    with pytest.raises(PipelineError, match="fewer than one global batch"):
        BatchPlan(3, 4, 0, 0, 1)


def test_poly_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = poly_lr(opt, 10)
    lrs = []
    for _ in range(10):
        lrs.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    np.testing.assert_allclose(lrs[:3], [1.0, 0.9 ** 0.9, 0.8 ** 0.9])
    assert s.get_last_lr()[0] == 0


class Points(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):
        i = key[1]
        return {"x": torch.tensor([float(i)]), "y": torch.tensor([2.0 * i])}


def test_fit_learns_saves_and_guards_against_nan(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = FitConfig(name="lin", sess_dir=str(tmp_path), device=torch.device("cpu"),
                    max_iters=60, batch_size=4, meta={"step": "t"})
    loss = lambda net, b: ((net(b["x"]) - b["y"]) ** 2).mean()  # noqa: E731
    s = fit(model, opt, poly_lr(opt, 60), Points(), loss, cfg)
    assert s["losses"][-1] < 0.1 * s["losses"][0]
    assert os.path.exists(tmp_path / "lin.pth") and os.path.exists(tmp_path / "lin.ckpt")
    assert s["first_loss"] == s["losses"][0] and s["final_loss"] == np.mean(s["losses"][-20:])
    # rerun of a finished run: nothing trains, and it reports the run's losses, not NaN
    cfg.resume = True
    again = fit(model, opt, poly_lr(opt, 60), Points(), loss, cfg)
    assert again["iters"] == 0 and again["losses"] == []
    assert again["first_loss"] == s["first_loss"] and again["final_loss"] == s["final_loss"]
    cfg.resume, cfg.name = False, "nan"
    with pytest.raises(PipelineError, match="loss became nan.*lower the learning rate"):
        fit(model, opt, poly_lr(opt, 60), Points(), lambda net, b: loss(net, b) * np.nan, cfg)


@pytest.mark.parametrize("name", ["resnet10t", "timm:resnet18d"])
def test_timm_resnets_reach_output_stride_16(name):
    net = CAMNet(20, name, freeze_bn=False, freeze_stem=False).eval()
    assert net.cams(torch.randn(1, 3, 64, 64)).shape == (1, 20, 4, 4)
