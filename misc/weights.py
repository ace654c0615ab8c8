"""Weights on disk: final weights and checkpoints carry metadata that identifies what made
them; loading checks it, so weights of another architecture, class count or run are
refused with the differing fields named. Always torch.load(weights_only=True)."""
import os

import torch

from misc.errors import PipelineError
from misc.fileio import atomic_path
from misc.torchutils import barrier, dist_env


def save_weights(path, model, meta):
    """Final weights with the metadata that identifies them (rank 0 writes)."""
    if dist_env()[0] == 0:
        with atomic_path(path) as tmp:
            torch.save({"meta": meta, "model": model.state_dict()}, tmp)
    barrier()


def read_state(path, what, producer):
    """torch.load of a weights/checkpoint file; a missing or corrupt file names the step
    that makes it."""
    if not os.path.exists(path):
        raise PipelineError(f"{path}: {what} not found; run step {producer} first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-tensor files
        raise PipelineError(f"{path}: cannot load {what} ({type(e).__name__}: {e}); "
                            f"delete it and rerun step {producer}") from e


def check_meta(path, saved, expected):
    """Refuse a file whose metadata differs from what this run expects."""
    diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: file has {a!r}, this run wants {b!r}" for k, (a, b) in diff.items())
        raise PipelineError(f"{path}: made for another configuration ({lines}); pass matching "
                            f"flags/--preset, or delete the file and retrain")


def load_checkpoint(path, meta):
    """A training checkpoint, after checking it belongs to the same run."""
    state = read_state(path, "checkpoint", meta.get("step", "?"))
    check_meta(path, state.get("meta", {}), meta)
    return state


def load_weights(model, path, meta):
    """Load sess weights into `model` after checking they were made for the same meta."""
    state = read_state(path, "weights", meta.get("step", "?"))
    check_meta(path, state.get("meta", {}), meta)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise PipelineError(f"{path}: weights do not fit the model ({str(e)[:300]}); "
                            f"delete the file and retrain") from e
    return model
