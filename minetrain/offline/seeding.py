"""Seeds of the random draws of training, per step: a resumed run draws what an uninterrupted run draws."""

from __future__ import annotations

import os

import numpy as np
import torch

# Part of every step seed: renumbering would change the draws of runs resumed across versions.
STAGE_NUMBERS = {"train": 0, "val": 1}


def step_seed(base_seed: int, stage: str, step: int, batch_idx: int, rank: int) -> int:
    """Seed of the random draws (dropout) of one training batch.

    A pure function of (run seed, step, batch index, rank), so a resumed run draws exactly what an
    uninterrupted run draws, whatever else consumed the global RNG in between (data loading,
    validation); the batch index tells apart the micro-batches of one accumulated step.
    """
    entropy = (base_seed, STAGE_NUMBERS[stage], step, batch_idx, rank)
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def default_seed() -> int:
    """The seed given to ``lightning.seed_everything`` if any, else the process's torch seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed() % 2**63
