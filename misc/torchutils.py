"""Device, distributed-process and seeding helpers shared by trainers and inference steps."""
import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from misc.errors import PipelineError


def dist_env():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def is_main():
    return dist_env()[0] == 0


def resolve_device(name="auto"):
    """auto -> CUDA when present, else CPU; under torchrun each rank takes its local GPU.
    Starts the process group (NCCL on GPUs, gloo on CPU) when launched by torchrun."""
    rank, world, local = dist_env()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError("--device cuda but torch sees no CUDA device; install the torch "
                                "build for your CUDA (see README) or use --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif name == "cpu":
        device = torch.device("cpu")
    else:
        raise PipelineError(f"--device {name}: expected auto, cpu or cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def autocast(device):
    """bf16 autocast on CUDA; plain fp32 on CPU (CPU autocast is slower than fp32 there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shard(items, rank=None, world=None):
    """The share of a list that one rank processes (round-robin, so shares stay balanced)."""
    if rank is None:
        rank, world, _ = dist_env()
    return list(items)[rank::world]


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
