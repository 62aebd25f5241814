"""Memory semantics: streaming equals whole windows, episode starts reset memory, no hidden state."""

from __future__ import annotations

import pytest
import torch
from model_helpers import TINY, make_batch, window

from minetrain.models import RocketPolicy

TOL = 1e-5
STEPS = 128


def _run(model: RocketPolicy, batch: dict, chunk: int) -> tuple[dict, list[torch.Tensor]]:
    """Feed ``batch`` in consecutive chunks, carrying memory; concatenate the outputs over time."""
    memory, outs = None, []
    for start in range(0, batch["image"].shape[1], chunk):
        with torch.no_grad():
            out, memory = model(window(batch, start, start + chunk), memory)
        outs.append(out["pi_logits"])
    return {k: torch.cat([o[k] for o in outs], dim=1) for k in outs[0]}, memory


@pytest.fixture(scope="module")
def streaming_case():
    torch.manual_seed(0)
    model = RocketPolicy(**{**TINY, "mem_len": 16, "timesteps": STEPS}).eval()
    first = torch.zeros(2, STEPS, dtype=torch.bool)
    first[0, 50] = True  # an episode starts in the middle for sample 0
    first[1, 0] = True
    batch = make_batch(2, STEPS, size=32, first=first)
    return model, batch, _run(model, batch, STEPS)


@pytest.mark.parametrize("chunk", [1, 7, 32, 128])
def test_streaming_equals_whole_window(streaming_case, chunk):
    model, batch, (whole, whole_memory) = streaming_case
    streamed, memory = _run(model, batch, chunk)
    for key in whole:
        assert (streamed[key] - whole[key]).abs().max() <= TOL
    for a, b in zip(memory, whole_memory, strict=True):
        assert (a.float() - b.float()).abs().max() <= TOL


def test_first_flag_forgets_everything_before_it(tiny_policy):
    t = 12
    first = torch.zeros(1, t, dtype=torch.bool)
    first[0, 5] = True
    batch = make_batch(1, t, first=first)
    with torch.no_grad():
        out, _ = tiny_policy(batch, None)
        fresh, _ = tiny_policy(window(batch, 5, t), None)
    for key in fresh["pi_logits"]:
        assert (out["pi_logits"][key][:, 5:] - fresh["pi_logits"][key]).abs().max() <= TOL
        # Without the flag the same frames see the earlier ones and the outputs differ.
    with torch.no_grad():
        carried, _ = tiny_policy(window(batch, 0, t) | {"first": torch.zeros(1, t, dtype=torch.bool)}, None)
    assert (carried["pi_logits"]["buttons"][:, 5:] - fresh["pi_logits"]["buttons"]).abs().max() > 1e-4


def test_first_in_next_window_resets_carried_memory(tiny_policy):
    a, b = make_batch(1, 6, seed=1), make_batch(1, 6, seed=2)
    b["first"] = torch.zeros(1, 6, dtype=torch.bool)
    b["first"][0, 0] = True
    with torch.no_grad():
        _, memory = tiny_policy(a, None)
        after, _ = tiny_policy(b, memory)
        fresh, _ = tiny_policy(b, None)
    assert (after["pi_logits"]["camera"] - fresh["pi_logits"]["camera"]).abs().max() <= TOL


def test_any_batch_size_at_any_call_and_samples_are_independent(tiny_policy):
    big = make_batch(3, 5, seed=3)
    with torch.no_grad():
        out3, memory3 = tiny_policy(big, None)
        out1, memory1 = tiny_policy(
            window(big, 0, 5)
            | {"image": big["image"][1:2]}
            | {"segment": {k: v[1:2] for k, v in big["segment"].items()}},
            None,
        )
    assert (out3["pi_logits"]["buttons"][1:2] - out1["pi_logits"]["buttons"]).abs().max() <= TOL
    assert [m.shape[0] for m in memory3] == [3] * len(memory3)
    assert [m.shape[0] for m in memory1] == [1] * len(memory1)


def test_memory_none_equals_initial_state_and_memory_is_detached(tiny_policy):
    batch = make_batch(2, 4)
    state = tiny_policy.initial_state(2)
    assert len(state) == 3 * TINY["num_layers"]
    assert state[0].shape == (2, 1, TINY["mem_len"]) and state[0].dtype == torch.bool
    assert state[1].shape == (2, TINY["mem_len"], TINY["hiddim"])
    with torch.no_grad():
        a, _ = tiny_policy(batch, None)
        b, _ = tiny_policy(batch, state)
    assert torch.equal(a["pi_logits"]["buttons"], b["pi_logits"]["buttons"])
    _, memory = tiny_policy(batch, None)
    assert not any(m.requires_grad for m in memory)
