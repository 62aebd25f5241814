import itertools

import numpy as np
import pytest

from minetrain.data.sampler import EpisodeContinuousBatchSampler, assign_episodes, batches_per_rank

COUNTS = [5, 1, 7, 3, 0, 4, 9, 2, 6, 3, 8, 2, 5, 4]


def samplers(world: int, batch_size: int = 2, **kwargs) -> list[EpisodeContinuousBatchSampler]:
    return [
        EpisodeContinuousBatchSampler(COUNTS, batch_size, num_replicas=world, rank=r, seed=3, **kwargs)
        for r in range(world)
    ]


def episode_of(window: int) -> int:
    return int(np.searchsorted(np.cumsum(COUNTS), window, side="right"))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_are_disjoint_equal_and_cover_each_window_once(world):
    ranks = samplers(world)
    for epoch in range(3):
        per_rank = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert len({len(batches) for batches in per_rank}) == 1
        assert all(len(batches) == len(ranks[0]) > 0 for batches in per_rank)
        windows = [w for batches in per_rank for batch in batches for w in batch]
        assert len(windows) == len(set(windows))
        assert len(windows) + ranks[0].dropped_windows == sum(COUNTS)
        episodes = [{episode_of(w) for batch in batches for w in batch} for batches in per_rank]
        for a in range(world):
            for b in range(a + 1, world):
                assert not episodes[a] & episodes[b]


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


def test_batches_per_rank_is_a_guaranteed_bound():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(0, 20, size=rng.integers(1, 30))
        world = int(rng.integers(1, 5))
        batch = int(rng.integers(1, 4))
        n = batches_per_rank(counts, batch, world)
        for epoch in range(3):
            order = np.random.default_rng((1, epoch)).permutation(len(counts))
            owned = assign_episodes(order, counts, world)
            assert min(sum(counts[e] for e in ranks) for ranks in owned) >= n * batch


def test_too_little_data_gives_no_batches():
    sampler = EpisodeContinuousBatchSampler([1, 1], 4, num_replicas=1, rank=0)
    assert len(sampler) == 0 and list(sampler) == []
