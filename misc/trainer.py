"""The one training loop every trainer uses (nanoGPT-style): deterministic sharded
batches, DDP under torchrun, bf16 autocast + channels_last on CUDA, optional
torch.compile, progress bar, atomic checkpoints with resume, final weights with
metadata. A trainer supplies a model, an optimiser, a dataset indexed by
(epoch, index, iteration) and a loss function."""
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.torchutils import autocast, barrier, dist_env
from misc.weights import load_checkpoint, save_weights


@dataclass
class FitConfig:
    """What the loop needs besides model, optimiser, data and loss."""
    name: str                   # files: sess/<name>.pth (weights), sess/<name>.ckpt (state)
    sess_dir: str
    device: torch.device
    max_iters: int
    batch_size: int             # per rank; the global batch is batch_size x world size
    seed: int = 0
    num_workers: int = 0
    ckpt_every: int = 0         # 0: only at the end
    resume: bool = False
    grad_clip: float = 0.0      # 0: off
    compile: bool = False
    meta: dict = field(default_factory=dict)  # identifies the architecture in saved files
    preset: str = ""            # with max_iters and the global batch, identifies a run to resume

    @classmethod
    def from_args(cls, args, **kw):
        """The fields every trainer takes from the command line, plus its own."""
        return cls(sess_dir=args.sess_dir, device=args.device, seed=args.seed,
                   num_workers=args.num_workers, ckpt_every=args.ckpt_every, resume=args.resume,
                   compile=args.compile, preset=args.preset, **kw)


class BatchPlan(torch.utils.data.Sampler):
    """Batches of (epoch, index, iteration) for iterations [start, stop): a permutation per epoch
    seeded by (seed, epoch), cut into global batches, each split across ranks. The
    union of the ranks' batches is the single-process batch of the same global size."""

    def __init__(self, n, batch_size, seed, start, stop, rank=0, world=1):
        self.n, self.b, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rank, self.world = rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise PipelineError(f"{n} training images are fewer than one global batch of "
                                f"{batch_size * world}; lower the batch size")

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        perm_epoch, perm = None, None
        for it in range(self.start, self.stop):
            epoch, b = divmod(it, self.per_epoch)
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, np.random.default_rng((self.seed, epoch)).permutation(self.n)
            g = perm[b * self.b * self.world:(b + 1) * self.b * self.world]
            yield [(epoch, int(i), it) for i in g[self.rank * self.b:(self.rank + 1) * self.b]]


def iters_for(n_images, epochs, batch_size, world=1):
    """Iterations of `epochs` passes over `n_images` with a global batch of batch_size x world."""
    return max(1, epochs * (n_images // (batch_size * world)))


def poly_lr(optimizer, max_iters, power=0.9):
    """Poly decay (1 - it/max)^power, the schedule of IRN and the reference."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: (1 - min(it, max_iters) / max_iters) ** power)


def cosine_lr(optimizer, max_iters, per_epoch=None):
    """Cosine decay to 0 over max_iters, stepped every iteration. With per_epoch, the
    reference's ViT schedule instead: CosineAnnealingLR(T_max=max_iters) stepped once per
    epoch of per_epoch iterations, so after e epochs the lr is the cosine at e/max_iters
    of its horizon: it never leaves the base lr (1 - 3e-6 of it at the paper's last
    epoch, 9 / 13,220 of the horizon)."""
    def f(it):
        t = min(it, max_iters) if per_epoch is None else it // per_epoch
        return 0.5 * (1 + math.cos(math.pi * t / max_iters))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def warmup_cosine_lr(optimizer, per_epoch, epochs, warmup_epochs, warmup_lr, min_lr):
    """DeiT's (and MCTformer's) schedule as timm 0.4's CosineLRScheduler runs it there: one
    lr per epoch, linear warm-up from warmup_lr over warmup_epochs, then cosine from the
    base lr to min_lr over `epochs`; stepped with the epoch index *after* each epoch, so
    epoch e >= 1 trains at the value of e - 1 and the first two epochs at warmup_lr.
    warmup_lr and min_lr are absolute; every group shares the base lr."""
    base = optimizer.param_groups[0]["lr"]

    def at(t):
        if t < warmup_epochs:
            return warmup_lr + t * (base - warmup_lr) / warmup_epochs
        return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / epochs)) \
            if t < epochs else min_lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: at(max(it // per_epoch - 1, 0)) / base)


def fit(model, optimizer, scheduler, dataset, loss_fn, cfg):
    """Train `model` for cfg.max_iters iterations; returns a summary dict.

    loss_fn(model, batch) -> scalar loss, with the batch already on the device.
    Saves sess/<name>.ckpt every cfg.ckpt_every iterations and at the end, and the
    final weights sess/<name>.pth; with cfg.resume, continues from the checkpoint.
    """
    rank, world, _ = dist_env()
    dev = cfg.device
    ckpt_path = os.path.join(cfg.sess_dir, f"{cfg.name}.ckpt")
    # a checkpoint only resumes the same run: same architecture, preset, length and batch
    run_meta = {**cfg.meta, "preset": cfg.preset, "max_iters": cfg.max_iters,
                "global_batch": cfg.batch_size * world}
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    start = 0
    curve_path = os.path.join(cfg.sess_dir, f"{cfg.name}.curve.json")
    curve = {"iter": [], "loss": [], "lr": []}
    if cfg.resume and os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, run_meta)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if dev.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
        start = int(state["iter"])
        curve = _read_curve(curve_path, start)
        if rank == 0:
            print(f"[{cfg.name}] resumed from {ckpt_path} at iteration {start}/{cfg.max_iters}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    plan = BatchPlan(len(dataset), cfg.batch_size, cfg.seed, start, cfg.max_iters, rank, world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=plan, num_workers=cfg.num_workers,
        pin_memory=dev.type == "cuda", persistent_workers=False)
    t0, seen, losses = time.time(), 0, []
    bar = tqdm(total=cfg.max_iters, initial=start, desc=cfg.name, disable=rank != 0,
               dynamic_ncols=True)
    net.train()
    it = start
    for it, batch in enumerate(loader, start):
        batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        if dev.type == "cuda" and "img" in batch:
            batch["img"] = batch["img"].contiguous(memory_format=torch.channels_last)
        with autocast(dev):
            loss = loss_fn(net, batch)
        if not torch.isfinite(loss):
            raise PipelineError(f"[{cfg.name}] loss became {loss.item()} at iteration {it}; "
                                f"lower the learning rate (the last checkpoint is kept)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]  # the lr this iteration used (first group)
        optimizer.step()
        scheduler.step()
        seen += cfg.batch_size * world
        losses.append(_global_mean(loss.detach(), world))
        for k, v in (("iter", it), ("loss", losses[-1]), ("lr", lr)):
            curve[k].append(v)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = it + 1
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.max_iters:
            _save_checkpoint(ckpt_path, model, optimizer, scheduler, done, run_meta)
            _write_curve(curve_path, curve)
    bar.close()
    _save_checkpoint(ckpt_path, model, optimizer, scheduler, cfg.max_iters, run_meta)
    _write_curve(curve_path, curve)
    save_weights(os.path.join(cfg.sess_dir, f"{cfg.name}.pth"), model, cfg.meta)
    dt = time.time() - t0
    # first / final loss of the whole run from its curve, so a resumed (or already
    # finished) run reports the run's losses, not NaN
    run = curve["loss"]
    return {"iters": cfg.max_iters - start, "images_per_s": seen / max(dt, 1e-9), "losses": losses,
            "first_loss": run[0] if run else math.nan,
            "final_loss": float(np.mean(run[-20:])) if run else math.nan, "seconds": dt}


def _global_mean(x, world):
    """The loss averaged over ranks (what the global batch saw), as a float for logging."""
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x.item()


def _read_curve(path, start):
    """The loss curve of the run being resumed, cut at the checkpoint's iteration."""
    try:
        with open(path) as f:
            c = json.load(f)
        keep = sum(i < start for i in c["iter"])
        return {k: list(c[k][:keep]) for k in ("iter", "loss", "lr")}
    except (OSError, ValueError, KeyError):
        return {"iter": [], "loss": [], "lr": []}  # no curve (older run): start a new one


def _write_curve(path, curve):
    """sess/<name>.curve.json: loss (mean over ranks) and lr of every iteration, plotted by draw."""
    if dist_env()[0] == 0:
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(curve, f)


def _save_checkpoint(path, model, optimizer, scheduler, it, meta):
    if dist_env()[0] == 0:
        dev = next(model.parameters()).device
        state = {"meta": meta, "iter": it, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    barrier()
