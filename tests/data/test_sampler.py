import itertools
import logging

import numpy as np
import pytest
import torch

from minetrain.data.sampler import EpisodeContinuousBatchSampler, batches_per_rank
from minetrain.offline.memory import SlotMemory

COUNTS = [5, 1, 7, 3, 0, 4, 9, 2, 6, 3, 8, 2, 5, 4]


def samplers(world: int, batch_size: int = 2, **kwargs) -> list[EpisodeContinuousBatchSampler]:
    return [
        EpisodeContinuousBatchSampler(COUNTS, batch_size, num_replicas=world, rank=r, seed=3, **kwargs)
        for r in range(world)
    ]


def episode_of(window: int) -> int:
    return int(np.searchsorted(np.cumsum(COUNTS), window, side="right"))


def all_batches(ranks: list[EpisodeContinuousBatchSampler], epoch: int) -> list[np.ndarray]:
    """Every rank's (N, B) plan of ``epoch``, read through iteration."""
    out = []
    for sampler in ranks:
        sampler.set_epoch(epoch)
        out.append(np.array(list(sampler), dtype=np.int64).reshape(-1, sampler.batch_size))
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_are_disjoint_equal_and_cover_each_window_once(world):
    ranks = samplers(world)
    for epoch in range(3):
        per_rank = all_batches(ranks, epoch)
        assert all(len(batches) == len(ranks[0]) > 0 for batches in per_rank)
        windows = np.concatenate([batches.ravel() for batches in per_rank])
        assert len(windows) == len(set(windows.tolist()))
        assert len(windows) + ranks[0].dropped_windows == sum(COUNTS)
        assert ranks[0].dropped_windows < world * 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_slots_walk_consecutive_windows(world):
    offsets = np.concatenate([[0], np.cumsum(COUNTS)[:-1]])
    for sampler in samplers(world, batch_size=3):
        batches = np.array(list(sampler))
        for slot in batches.T:
            for prev, cur in itertools.pairwise(slot):
                if episode_of(cur) == episode_of(prev):
                    assert cur == prev + 1
                else:
                    assert cur == offsets[episode_of(cur)]
                    assert prev == offsets[episode_of(prev)] + COUNTS[episode_of(prev)] - 1


def test_order_changes_per_epoch_and_is_deterministic():
    sampler = samplers(1)[0]
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    again = samplers(1)[0]
    again.set_epoch(1)
    assert list(again) == second


def test_no_shuffle_keeps_episode_order_every_epoch():
    sampler = EpisodeContinuousBatchSampler(COUNTS, 1, num_replicas=1, rank=0, shuffle=False)
    sampler.set_epoch(5)
    assert [b[0] for b in sampler] == list(range(sum(COUNTS)))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_resume_mid_epoch_continues_with_the_next_batch(world):
    for rank, sampler in enumerate(samplers(world)):
        sampler.set_epoch(2)
        full = list(sampler)
        iterator = iter(sampler)
        for _ in range(len(full) // 2 + 1):  # prefetch ran ahead of what training consumed
            next(iterator)
        state = sampler.state_dict(consumed=len(full) // 2)

        resumed = EpisodeContinuousBatchSampler(COUNTS, 2, num_replicas=world, rank=rank, seed=3)
        resumed.load_state_dict(state)
        resumed.set_epoch(2)
        assert len(resumed) == len(full)
        assert list(resumed) == full[len(full) // 2 :]
        assert list(resumed) == full  # the skip applies to one iteration only


def test_resume_state_for_another_epoch_is_ignored():
    sampler = samplers(1)[0]
    sampler.load_state_dict({**sampler.state_dict(consumed=3), "epoch": 0})
    sampler.set_epoch(1)
    expected = samplers(1)[0]
    expected.set_epoch(1)
    assert list(sampler) == list(expected)


def test_resume_with_another_batch_size_restarts_the_epoch(caplog):
    state = samplers(1, batch_size=2)[0].state_dict(consumed=3)
    other = samplers(1, batch_size=3)[0]
    other.load_state_dict(state)
    assert "restarts from its first batch" in caplog.text
    reference = samplers(1, batch_size=3)[0]
    assert list(other) == list(reference)


def test_batches_per_rank_leaves_out_less_than_one_batch_per_rank():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(0, 20, size=rng.integers(1, 30))
        world, batch = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        n = batches_per_rank(counts, batch, world)
        assert 0 <= counts.sum() - n * batch * world < batch * world


def contractor_window_counts(episodes: int, frames: int, spread: str, win_len: int = 128) -> np.ndarray:
    """Windows per episode for episode lengths summing to ``frames``: heavy-tailed or +-50% around the mean.

    The published contractor episodes range from under a minute to hours; a long tail is what made
    whole-episode-per-rank plans leave out ``(ranks - 1)`` longest episodes. The +-50% spread is
    the one ``benchmarks/make_index_only.py`` writes.
    """
    rng = np.random.default_rng(0)
    raw = rng.lognormal(0.0, 1.0, episodes) if spread == "lognormal" else rng.uniform(0.5, 1.5, episodes)
    lengths = np.maximum(1, (raw * frames / raw.sum()).astype(np.int64))
    return -(-lengths // win_len)


@pytest.mark.parametrize("spread", ["lognormal", "uniform"])
@pytest.mark.parametrize(("episodes", "frames"), [(1_565, 16_050_000), (15_655, 160_500_000)])
def test_eight_ranks_leave_out_at_most_a_thousandth_at_contractor_scale(episodes, frames, spread):
    counts = contractor_window_counts(episodes, frames, spread)
    ranks = [EpisodeContinuousBatchSampler(counts, 8, num_replicas=8, rank=r, seed=1) for r in range(8)]
    assert ranks[0].dropped_windows <= 0.001 * counts.sum()
    plans = [sampler.plan(0) for sampler in ranks]
    assert {plan.shape for plan in plans} == {(len(ranks[0]), 8)}
    used = np.concatenate([plan.ravel() for plan in plans])
    assert len(np.unique(used)) == len(used) == counts.sum() - ranks[0].dropped_windows
    assert not np.array_equal(ranks[3].plan(1), plans[3])  # reshuffled every epoch
    ranks[3].set_epoch(1)
    state = ranks[3].state_dict(consumed=100)
    resumed = EpisodeContinuousBatchSampler(counts, 8, num_replicas=8, rank=3, seed=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert np.array_equal(np.array(list(resumed)), ranks[3].plan(1)[100:])


def window_fields(windows: np.ndarray, counts: list[int], win_len: int = 4) -> dict:
    """The fields SlotMemory reads for one batch: each window's episode name and frame timestamps."""
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    episodes = np.searchsorted(np.cumsum(counts), windows, side="right")
    start = (windows - offsets[episodes]) * win_len
    return {
        "episode": [f"ep{e}" for e in episodes],
        "timestamp": torch.as_tensor(start[:, None] + np.arange(win_len)),
        "mask": torch.ones(len(windows), win_len),
    }


@pytest.mark.parametrize("world", [2, 3])
def test_memory_restarts_where_an_episode_is_split_between_slots_or_ranks(world):
    """Across two epochs, a slot keeps its memory exactly when its window follows its previous one."""
    ranks = samplers(world, batch_size=2)
    plans = [all_batches(ranks, epoch) for epoch in range(2)]
    split = 0
    for rank in range(world):
        memory = SlotMemory()
        previous = None
        for batch in np.concatenate([plans[0][rank], plans[1][rank]]):
            prepared, _ = memory.prepare(window_fields(batch, COUNTS))
            if previous is None:
                assert prepared["first"][:, 0].all()
            else:
                follows = (batch == previous + 1) & (episode_of_all(batch) == episode_of_all(previous))
                assert prepared["first"][:, 0].tolist() == (~follows).tolist()
            memory.update(prepared, [torch.zeros(len(batch))])
            previous = batch
        first_windows = plans[0][rank][0]
        split += int(sum(w != np.cumsum([0, *COUNTS])[episode_of(w)] for w in first_windows))
    assert split > 0, "no run starts mid-episode: the test would not cover a split"


def episode_of_all(windows: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(COUNTS), windows, side="right")


def test_state_of_a_whole_episode_plan_restarts_the_epoch_on_several_ranks(caplog):
    """A state saved before episodes could straddle ranks names no plan version: its order differs."""
    sampler = samplers(2)[1]
    old = {k: v for k, v in sampler.state_dict(consumed=2).items() if k != "plan_version"}
    with caplog.at_level(logging.WARNING):
        sampler.load_state_dict(old)
    assert "restarts from its first batch" in caplog.text
    single = samplers(1)[0]
    single.set_epoch(0)
    full = list(single)
    single.load_state_dict({k: v for k, v in single.state_dict(consumed=2).items() if k != "plan_version"})
    assert list(single) == full[2:]


def test_too_little_data_gives_no_batches():
    sampler = EpisodeContinuousBatchSampler([1, 1], 4, num_replicas=1, rank=0)
    assert len(sampler) == 0 and list(sampler) == []


@pytest.mark.parametrize("world", [1, 3])
def test_slots_walk_contiguous_runs_of_the_shuffled_sequence(world):
    """Rank r's slot j takes run r * B + j; with one process that is the plan of earlier versions."""
    offsets = np.concatenate([[0], np.cumsum(COUNTS)[:-1]])
    for rank, sampler in enumerate(samplers(world, batch_size=2)):
        order = sampler.episode_order(1)
        sequence = np.concatenate([offsets[e] + np.arange(COUNTS[e]) for e in order])
        n = len(sampler)
        runs = sequence[: n * 2 * world].reshape(2 * world, n)
        assert np.array_equal(sampler.plan(1), runs[2 * rank : 2 * rank + 2].T)
