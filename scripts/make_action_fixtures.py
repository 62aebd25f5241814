"""Writes tests/fixtures/actions_reference.npz: MineStudio's own action mapping of seeded inputs.

Run once in the reference venv (MineStudio 1.1.6), from the repository root:

    HF_HUB_OFFLINE=1 /tmp/reference-venv/bin/python scripts/make_action_fixtures.py

Only the reference's outputs are stored; tests/test_actions.py rebuilds the inputs from the same
seed with ``env_inputs`` and ``agent_inputs`` below (numpy only, so both interpreters share them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 20240603
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "actions_reference.npz"

# Env button names in the reference's order (its Buttons.ALL).
BUTTONS = [
    *["attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop", "inventory"],
    *[f"hotbar.{i}" for i in range(1, 10)],
]
# Camera inputs per dtype: float64 is what converters write, float32 checks the reference's
# mixed-precision arithmetic.
ENV_SETS = {"f64": (100_000, np.float64), "f32": (20_000, np.float32)}
NUM_BUTTON_CLASSES = 8641
NUM_CAMERA_CLASSES = 121


def _bin_edges() -> np.ndarray:
    """Degrees where the mu-law code crosses a bin edge, and their float neighbours."""
    codes = np.arange(1, 10, 2) / 10
    edges = 11.0**codes - 1.0
    edges = np.concatenate([edges, -edges])
    return np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])


def _camera(rng: np.random.Generator, n: int) -> np.ndarray:
    """A mix of exact zeros, small and large moves, VPT mouse steps, infinities and bin edges."""
    specials = np.concatenate([[0.0, -0.0, 10.0, -10.0, np.inf, -np.inf, 1e6, -1e6], _bin_edges()])
    candidates = np.stack(
        [
            np.zeros((n, 2)),
            rng.uniform(-12.0, 12.0, (n, 2)),
            rng.normal(0.0, 1.5, (n, 2)),
            rng.integers(-80, 81, (n, 2)) * 360 / 2400,
            rng.uniform(10.0, 1e4, (n, 2)) * rng.choice([-1.0, 1.0], (n, 2)),
            rng.choice(specials, (n, 2)),
        ]
    )
    kind = rng.integers(0, len(candidates), (n, 2))
    return np.take_along_axis(candidates, kind[None], axis=0)[0]


def env_inputs(name: str) -> dict[str, np.ndarray]:
    """Seeded random env actions: buttons mostly 0/1 (some 2s), camera in the set's dtype."""
    n, dtype = ENV_SETS[name]
    rng = np.random.default_rng([SEED, list(ENV_SETS).index(name)])
    env = {}
    for key in BUTTONS:
        rate = 0.05 if key == "inventory" else 0.08 if key.startswith("hotbar") else 0.3
        value = (rng.random(n) < rate).astype(np.int64)
        value[rng.random(n) < 0.01] = 2
        env[key] = value
    env["camera"] = _camera(rng, n).astype(dtype)
    return env


def agent_inputs() -> dict[str, np.ndarray]:
    """Every button class with a random camera class, then every camera class with a few buttons."""
    rng = np.random.default_rng([SEED, 99])
    few = np.array([0, 1, 8640, 4321, 8639])
    buttons = np.concatenate([np.arange(NUM_BUTTON_CLASSES), np.repeat(few, NUM_CAMERA_CLASSES)])
    camera = np.concatenate(
        [
            rng.integers(0, NUM_CAMERA_CLASSES, NUM_BUTTON_CLASSES),
            np.tile(np.arange(NUM_CAMERA_CLASSES), len(few)),
        ]
    )
    return {"buttons": buttons, "camera": camera}


def main() -> None:
    import minestudio
    from minestudio.data.minecraft.callbacks.action import ActionKernelCallback

    callback = ActionKernelCallback()
    out: dict[str, np.ndarray] = {}
    for name in ENV_SETS:
        agent = callback.do_postprocess({"action": env_inputs(name)})["agent_action"]
        out[f"env_{name}_buttons"] = agent["buttons"][:, 0].astype(np.uint16)
        out[f"env_{name}_camera"] = agent["camera"][:, 0].astype(np.uint8)

    agent = agent_inputs()
    factored = callback.action_mapper.to_factored({k: v[:, None] for k, v in agent.items()})
    env = callback.action_transformer.policy2env(factored)
    out["agent_buttons"] = np.stack([env[key] for key in BUTTONS], axis=-1).astype(np.uint8)
    out["agent_camera"] = env["camera"]
    out["reference"] = np.array(f"minestudio {getattr(minestudio, '__version__', '1.1.6')}")

    tmp = FIXTURE.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **out)
    tmp.replace(FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
