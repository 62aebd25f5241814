import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from minetrain import actions as A
from minetrain.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "actions_reference.npz"


def _load_recipe():
    spec = importlib.util.spec_from_file_location(
        "make_action_fixtures", ROOT / "scripts" / "make_action_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe = _load_recipe()


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _torch(tree):
    return {key: torch.from_numpy(np.asarray(value)) for key, value in tree.items()}


def _env(n=1, camera=(0.0, 0.0), **pressed):
    env = {key: np.zeros(n, dtype=np.int64) for key in A.BUTTONS}
    for key, value in pressed.items():
        env[key.replace("_", ".")] = np.full(n, value)
    env["camera"] = np.tile(np.asarray(camera, dtype=np.float64), (n, 1))
    return env


def _decoded(env):
    """Which keys are pressed after env -> agent -> env, for checking the grouping rules."""
    back = A.agent_to_env(A.env_to_agent(env))
    return {key for key in A.BUTTONS if back[key][0]}, back["camera"][0]


def test_constants_follow_the_reference():
    assert tuple(recipe.BUTTONS) == A.BUTTONS
    assert (A.NUM_BUTTON_CLASSES, A.NUM_CAMERA_CLASSES, A.CAMERA_NULL_CLASS) == (8641, 121, 60)
    assert (A.CAMERA_BINS_PER_AXIS, A.CAMERA_NULL_BIN) == (11, 5)
    assert (A.INVENTORY_CLASS, A.NULL_BUTTON_CLASS) == (8640, 0)


@pytest.mark.parametrize("name", list(recipe.ENV_SETS))
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_env_to_agent_matches_reference(reference, name, kind):
    env = recipe.env_inputs(name)
    agent = A.env_to_agent(_torch(env) if kind == "torch" else env)
    for key in ("buttons", "camera"):
        got = np.asarray(agent[key])
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, reference[f"env_{name}_{key}"], err_msg=f"{name} {key}")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_agent_to_env_matches_reference_for_every_button_class(reference, kind):
    agent = recipe.agent_inputs()
    assert set(agent["buttons"].tolist()) == set(range(A.NUM_BUTTON_CLASSES))
    env = A.agent_to_env(_torch(agent) if kind == "torch" else agent)
    buttons = np.stack([np.asarray(env[key]) for key in A.BUTTONS], axis=-1)
    np.testing.assert_array_equal(buttons, reference["agent_buttons"])
    assert np.asarray(env["camera"]).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(env["camera"]), reference["agent_camera"])


def test_env_round_trip_is_stable():
    agent = A.env_to_agent(recipe.env_inputs("f64"))
    again = A.env_to_agent(A.agent_to_env(agent))
    np.testing.assert_array_equal(again["buttons"], agent["buttons"])
    np.testing.assert_array_equal(again["camera"], agent["camera"])


def test_agent_round_trip_for_consistent_classes():
    buttons, camera = np.meshgrid(
        np.arange(A.NUM_BUTTON_CLASSES), np.arange(A.NUM_CAMERA_CLASSES), indexing="ij"
    )
    camera_meta_on = (buttons % 2 == 1) & (buttons != A.INVENTORY_CLASS)
    consistent = np.where(camera_meta_on, camera != A.CAMERA_NULL_CLASS, camera == A.CAMERA_NULL_CLASS)
    agent = {"buttons": buttons[consistent], "camera": camera[consistent]}
    assert len(agent["buttons"]) == 4320 * 120 + 4320 + 1
    back = A.env_to_agent(A.agent_to_env(agent))
    np.testing.assert_array_equal(back["buttons"], agent["buttons"])
    np.testing.assert_array_equal(back["camera"], agent["camera"])


def test_camera_quantiser():
    centres = A.dequantize_camera(np.arange(11))
    assert centres[5] == 0.0 and centres[0] == -10.0 and centres[10] == 10.0
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_array_equal(A.quantize_camera(centres), np.arange(11))
    big = np.array([10.0, 11.0, 1e9, np.inf, -10.0, -11.0, -np.inf, 0.0, -0.0])
    np.testing.assert_array_equal(A.quantize_camera(big), [10, 10, 10, 10, 0, 0, 0, 5, 5])
    # Integer degrees are accepted like floats.
    np.testing.assert_array_equal(
        A.quantize_camera(np.array([0, 3, -30])), A.quantize_camera(np.array([0.0, 3.0, -30.0]))
    )


def test_camera_class_and_bins_are_inverse():
    classes = np.arange(A.NUM_CAMERA_CLASSES)
    bins = A.camera_bins(classes)
    assert bins.shape == (121, 2) and bins[60].tolist() == [5, 5]
    np.testing.assert_array_equal(A.camera_class(bins), classes)
    np.testing.assert_array_equal(A.camera_class(A.camera_bins(torch.from_numpy(classes))).numpy(), classes)


def test_pitch_is_the_major_camera_axis():
    agent = A.env_to_agent(_env(camera=(10.0, 0.0)))
    assert agent["camera"][0] == 10 * 11 + 5
    agent = A.env_to_agent(_env(camera=(0.0, -10.0)))
    assert agent["camera"][0] == 5 * 11 + 0


def test_grouping_rules():
    assert A.env_to_agent(_env())["buttons"][0] == A.NULL_BUTTON_CLASS
    assert _decoded(_env(forward=1, back=1, jump=1))[0] == {"jump"}
    assert _decoded(_env(left=1, right=1))[0] == set()
    assert _decoded(_env(forward=1, left=1))[0] == {"forward", "left"}
    # As in the reference, sprint+sneak is not cancelled: the later option (sneak) wins.
    assert _decoded(_env(sprint=1, sneak=1))[0] == {"sneak"}
    assert _decoded(_env(hotbar_1=1, hotbar_5=1, hotbar_3=1))[0] == {"hotbar.5"}
    pressed, camera = _decoded(_env(camera=(4.0, -1.0), attack=1, use=1, drop=1))
    assert pressed == {"attack", "use", "drop"}
    assert camera.tolist() == A.dequantize_camera(np.array([8, 4])).tolist()


def test_inventory_excludes_everything_else():
    env = _env(camera=(5.0, 5.0), inventory=1, forward=1, attack=1, hotbar_2=1)
    agent = A.env_to_agent(env)
    assert (agent["buttons"][0], agent["camera"][0]) == (A.INVENTORY_CLASS, A.CAMERA_NULL_CLASS)
    assert _decoded(env) == ({"inventory"}, pytest.approx([0.0, 0.0]))
    # Only a value of exactly 1 opens the inventory; other non-zero values press ordinary buttons.
    assert A.env_to_agent(_env(inventory=2))["buttons"][0] == A.NULL_BUTTON_CLASS
    assert _decoded(_env(attack=2))[0] == {"attack"}


def test_camera_meta_flag():
    still = A.env_to_agent(_env(camera=(0.0, 0.0), attack=1))
    tiny = A.env_to_agent(_env(camera=(0.1, -0.2), attack=1))
    moved = A.env_to_agent(_env(camera=(0.0, 0.5), attack=1))
    assert still["camera"][0] == tiny["camera"][0] == A.CAMERA_NULL_CLASS
    assert still["buttons"][0] == tiny["buttons"][0] == moved["buttons"][0] - 1
    assert moved["camera"][0] == 5 * 11 + 6
    # A class with camera-meta off decodes to no move whatever the camera head says.
    env = A.agent_to_env({"buttons": np.array([0]), "camera": np.array([0])})
    assert env["camera"].tolist() == [[0.0, 0.0]]


def test_leading_shapes_and_scalars():
    env = recipe.env_inputs("f32")
    flat = A.env_to_agent(env)
    shaped = A.env_to_agent(
        {key: value[:600].reshape(20, 30, *value.shape[1:]) for key, value in env.items()}
    )
    assert shaped["buttons"].shape == (20, 30)
    np.testing.assert_array_equal(shaped["buttons"].reshape(-1), flat["buttons"][:600])
    single = A.env_to_agent({key: value[7] for key, value in env.items()})
    assert single["buttons"].shape == () and single["buttons"] == flat["buttons"][7]
    back = A.agent_to_env({"buttons": np.int64(5), "camera": np.int64(3)})
    assert back["attack"].shape == () and back["camera"].shape == (2,)
    assert A.env_to_agent({key: value[:0] for key, value in env.items()})["buttons"].shape == (0,)


def test_torch_stays_torch_and_accepts_mixed_inputs():
    env = _env(3, camera=(1.0, 2.0), jump=1)
    mixed = dict(env, camera=torch.tensor(env["camera"], dtype=torch.float32), jump=[1, 1, 1])
    agent = A.env_to_agent(mixed)
    assert isinstance(agent["buttons"], torch.Tensor) and agent["buttons"].dtype == torch.int64
    np.testing.assert_array_equal(agent["buttons"].numpy(), A.env_to_agent(env)["buttons"])
    back = A.agent_to_env(agent)
    assert isinstance(back["camera"], torch.Tensor) and back["camera"].dtype == torch.float64
    assert back["jump"].tolist() == [1, 1, 1]


def test_extra_keys_are_ignored():
    env = dict(_env(2, forward=1), ESC=np.ones(2), swapHands=np.ones(5), pickItem="x")
    assert A.env_to_agent(env)["buttons"].tolist() == A.env_to_agent(_env(2, forward=1))["buttons"].tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda env: env.pop("hotbar.4"), "missing key(s) hotbar.4"),
        (lambda env: env.pop("camera"), "missing key(s) camera"),
        (lambda env: env.update(jump=np.zeros(3)), "'jump' has shape (3,) but 'camera' has (4, 2)"),
        (lambda env: env.update(camera=np.zeros((4, 3))), "'camera' has shape (4, 3); expected (..., 2)"),
        (lambda env: env.update(camera=np.zeros(4)), "'camera' has shape (4,); expected (..., 2)"),
        (lambda env: env["camera"].__setitem__((2, 1), np.nan), "camera holds NaN"),
    ],
)
def test_bad_env_actions(change, message):
    env = _env(4)
    change(env)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        A.env_to_agent(env)


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ({"buttons": np.array([1])}, "missing key(s) camera"),
        ({"buttons": np.array([8641]), "camera": np.array([0])}, "'buttons' holds 8641, outside [0, 8641)"),
        ({"buttons": np.array([0]), "camera": np.array([-1])}, "'camera' holds -1, outside [0, 121)"),
        ({"buttons": np.array([0.0]), "camera": np.array([0])}, "'buttons' must hold integers"),
        ({"buttons": np.array([0, 1]), "camera": np.array([0])}, "'buttons' (2,) and 'camera' (1,)"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_agent_actions(agent, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        A.agent_to_env(agent)


def test_bad_camera_bins():
    with pytest.raises(DataError, match="camera bins holds 11"):
        A.dequantize_camera(np.array([0, 11]))
    with pytest.raises(DataError, match="must be a mapping"):
        A.env_to_agent([0, 1])
