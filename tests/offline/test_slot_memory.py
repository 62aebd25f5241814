"""Per-slot memory carrying: which slots continue, and what MineLightning feeds the policy."""

from __future__ import annotations

import pytest
import torch
from offline_support import EchoPolicy, actions, window

from minetrain.errors import ConfigError
from minetrain.offline import MineLightning
from minetrain.offline.memory import SlotMemory, continues, last_real_timestamp
from minetrain.offline.mine_callbacks import BehaviorCloneCallback


def test_continuity_rules() -> None:
    prev = window(["a", "b", "c", "d"], [0, 0, 0, 0], stride=2)
    new = window(["a", "b", "x", "d"], [8, 10, 8, 8], stride=2)
    last = last_real_timestamp(prev["timestamp"], prev["mask"])
    assert last.tolist() == [6, 6, 6, 6]
    stride = torch.full((4,), 2)
    # same episode and next frame / a gap / another episode / same episode and next frame
    got = continues(prev["episode"], last, stride, new["episode"], new["timestamp"], new["mask"])
    assert got.tolist() == [True, False, False, True]


def test_padded_windows() -> None:
    prev = window(["a", "b"], [0, 0], real=[3, 0])
    last = last_real_timestamp(prev["timestamp"], prev["mask"])
    assert last[0] == 2  # last real frame, not the padding's -1
    # A one-frame window continues with the previous window's stride; all-padding never continues.
    new = window(["a", "b"], [3, 0], real=[1, 4])
    got = continues(
        prev["episode"], last, torch.tensor([1, 0]), new["episode"], new["timestamp"], new["mask"]
    )
    assert got.tolist() == [True, False]


def test_slot_memory_sets_first_and_survives_state_dict() -> None:
    slots = SlotMemory()
    batch, memory = slots.prepare(window(["a", "b"], [4, 4]))
    assert memory is None and batch["first"][:, 0].all()  # nothing carried yet
    state = [torch.randn(2, 3)]
    slots.update(batch, state)
    restored = SlotMemory()
    restored.load_state_dict(slots.state_dict())
    batch, memory = restored.prepare(window(["a", "c"], [8, 8]))
    assert batch["first"][:, 0].tolist() == [False, True]
    assert torch.equal(memory[0], state[0])
    # A batch of another size starts every slot afresh.
    batch, memory = restored.prepare(window(["a"], [8]))
    assert memory is None and batch["first"][0, 0]


def test_train_and_val_memory_are_separate() -> None:
    policy = EchoPolicy()
    module = MineLightning(policy, callbacks=[BehaviorCloneCallback()])
    for stage, starts in (("train", [0, 0]), ("val", [0, 0]), ("train", [4, 4]), ("val", [4, 99])):
        batch = window(["a", "b"], starts) | {
            "image": torch.zeros(2, 4, 1, 1, 3),
            "agent_action": actions(2, 4),
        }
        module._batch_step(batch, 0, stage)
    (_, m0), (_, v0), (first2, m2), (first3, v3) = policy.calls
    assert m0 is None and v0 is None
    assert first2[:, 0].tolist() == [False, False] and m2[0].tolist() == [4, 4]  # train memory carried
    assert first3[:, 0].tolist() == [False, True] and v3[0].tolist() == [4, 4]  # val: its own memory


def test_batches_need_episode_and_timestamp() -> None:
    batch = window(["a"], [0])
    del batch["timestamp"]
    with pytest.raises(ConfigError, match="batch has no 'timestamp'"):
        SlotMemory().prepare(batch)
