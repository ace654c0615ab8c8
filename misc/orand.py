"""Combining CAM sources: the probabilistic OR / AND of N >= 2 sources and the naive
ensemble (pure numpy; loading the sources is pipeline.camdata's job)."""
import numpy as np

from misc.cam_io import normalize_max


def prob_or(maps):
    """1 - prod(1 - c_i): high where any source fires (recall)."""
    return 1 - np.prod([1 - m for m in maps], axis=0)


def prob_and(maps):
    """prod(c_i): high only where every source fires (precision)."""
    return np.prod(maps, axis=0)


def calibrate(m, offset=0.0, power=1.0):
    """A source's map brought to the common level: m ** power + offset (power 1: the
    reference's additive offset; an offset 0 and power log T / log t: the map's value t
    becomes T while 0 and 1 stay, so background stays 0 however many sources are ORed)."""
    return m + offset if power == 1 else np.maximum(m, 0) ** power + offset


def naive_ensemble(maps):
    """Mean of the (offset, unclipped) sources, ReLU, each class divided by its max."""
    return normalize_max(np.maximum(np.mean(maps, axis=0), 0))
