"""What ``minetrain pretrain`` checks around Hydra, so that a bad command line is one ``error:`` line.

Hydra reports its own errors over several lines, and Lightning, the policy and the loggers read the
config values only deep inside a run, where a bad one becomes a traceback. The command line is checked
before Hydra parses it and the composed config before anything is built, naming the key and what it
accepts.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from minetrain.errors import ConfigError
from minetrain.models.checkpoint import NAME_KEY
from minetrain.models.registry import DEFAULT_POLICY, POLICIES, policy_class

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LOGGERS = ("csv", "tensorboard", "wandb", "none")
# The packages each logger needs (any one of them) and the extra that installs them.
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
# Policy arguments that name files: read relative to where the command was run (the run starts in
# its run dir), and checked to exist before anything is built.
MODEL_FILE_KEYS = ("model_path", "weights_path", "backbone_weights")
# Files a policy's config must name unless it gives the policy's architecture arguments instead.
REQUIRED_MODEL_FILES = {"vpt": ("model_path", "weights_path")}
# Keys whose values are paths: minetrain's own checkpoint names hold '=' (ckpt-epoch=0-step=6.ckpt),
# which Hydra's override grammar rejects unless the value is quoted.
PATH_KEYS = ("ckpt_path", "data.dataset_dirs", *(f"model.{key}" for key in MODEL_FILE_KEYS))
# Hydra options that take a value, which is not an override.
HYDRA_VALUE_OPTIONS = (
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--experimental-rerun",
)
# Lightning accepts several types for these, and checks them itself when the Trainer is built.
TRAINER_FREE_TYPES = (
    "accelerator",
    "devices",
    "precision",
    "strategy",
    "val_check_interval",
    "limit_val_batches",
    "check_val_every_n_epoch",
)
NULLABLE = ("data.prefetch_factor",)
# Not an argument of RocketPolicy: a training setting build_training applies (true, false or a backend).
MODEL_COMPILE = "compile"
SECTIONS = ("model", "data", "optim", "ema", "trainer", "demo_data")
_HYDRA_PLAIN = re.compile(r"[\w/.\-+@%]+")


def hydra_quote(value: str) -> str:
    """``value`` as one Hydra string: quoted (escaping quotes and trailing backslashes) unless plain."""
    if _HYDRA_PLAIN.fullmatch(value):
        return value
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


def _quote_path_value(key: str, value: str) -> str:
    if not value or value[0] in "'\"" or value in ("null", "[]") or "${" in value:
        return value
    if key != "data.dataset_dirs":
        return hydra_quote(value)
    items = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
    quoted = (item if item[:1] in "'\"" else hydra_quote(item) for item in (i.strip() for i in items) if item)
    return f"[{','.join(quoted)}]"


def prepare_overrides(argv: Sequence[str]) -> list[str]:
    """``argv`` with path values quoted for Hydra (a plain ``data.dataset_dirs=DIR`` becomes one dir),
    every override checked with Hydra's parser so that a bad one is named."""
    parser = OverridesParser.create()
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("-") or "=" not in arg or (i and argv[i - 1] in HYDRA_VALUE_OPTIONS):
            out.append(arg)
            continue
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in PATH_KEYS:
            arg = f"{key}={_quote_path_value(key.lstrip('+~'), value)}"
        try:
            parser.parse_override(arg)
        except HydraException as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(
                f"cannot read the override {arg!r} ({reason}); quote a value holding spaces, commas, "
                f"brackets or '=' for Hydra, e.g. {key}='...'"
            ) from None
        out.append(arg)
    return out


def hydra_error(err: Exception) -> str:
    """One line for an error Hydra or OmegaConf raised while composing the config."""
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and getattr(cause, "full_key", None):
        full_key = str(cause.full_key)
        section, _, name = full_key.rpartition(".")
        parent = getattr(cause, "parent_node", None)
        keys = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(name, keys, n=3)
        hint = f"did you mean {' or '.join(f'{section}.{k}'.lstrip('.') for k in close)}? " if close else ""
        where = f"under {section}" if section else "at the top level"
        return (
            f"{full_key} is not a config key; {hint}valid keys {where}: {', '.join(keys)}; "
            f"add a key the config lacks with +{full_key}=VALUE"
        )
    if isinstance(err, MissingConfigException):
        configs = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        return f"{str(err).splitlines()[0]} The packaged configs are: {configs} (or add --config-dir DIR)"
    return " ".join(str(err).split())


def _leaves(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in cfg:
        path = f"{prefix}{key}"
        if OmegaConf.is_interpolation(cfg, str(key)):
            continue
        value = cfg[key]
        if isinstance(value, DictConfig):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def _kind(default: Any) -> tuple[tuple[type, ...], str] | None:
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    return None


def check_types(cfg: DictConfig) -> None:
    """Every value has the type of the demo config's default for that key (ints, numbers, booleans)."""
    for section in SECTIONS:
        if not isinstance(cfg.get(section), DictConfig):
            raise ConfigError(
                f"{section}={cfg.get(section)!r} replaces the whole {section} section; set its keys instead, "
                f"e.g. {section}.KEY=VALUE"
            )
    defaults = OmegaConf.load(CONFIG_DIR / "pretrain.yaml")
    # The model section's types: those of the packaged model config of the same policy, if any.
    models = [OmegaConf.load(path) for path in sorted((CONFIG_DIR / "model").glob("*.yaml"))]
    same = [m for m in models if m.get("name") == cfg.model.get("name", DEFAULT_POLICY)]
    defaults.model = same[0] if same else {}
    for path, default in _leaves(defaults):
        section, _, name = path.partition(".")
        kind = _kind(default)
        if section == "hydra" or kind is None or (section == "trainer" and name in TRAINER_FREE_TYPES):
            continue
        if path == f"model.{MODEL_COMPILE}":
            continue  # check_compile
        value = OmegaConf.select(cfg, path)
        if value is None and path in NULLABLE:
            continue
        types, what = kind
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            example = str(default).lower() if isinstance(default, bool) else default
            raise ConfigError(f"{path}={value!r} is not {what}; give {what}, e.g. {path}={example}")


def check_kwargs(
    section: str,
    given: Iterable[str],
    target: Callable[..., Any] | Sequence[Callable[..., Any]],
    owner: str,
    exclude: Sequence[str] = (),
) -> None:
    """Every key of ``section`` is a keyword argument of ``target`` (or of one of several targets; it is
    passed there as is), other than the ``exclude`` ones minetrain passes itself."""
    targets = target if isinstance(target, Sequence) else [target]
    params = [p for t in targets for p in inspect.signature(t).parameters.values()]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = (p.name for p in params if p.kind in kinds and p.name not in ("self", "cls", *exclude))
    accepted = list(dict.fromkeys(names))
    for name in given:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=3)
            hint = f"did you mean {' or '.join(f'{section}.{c}' for c in close)}? " if close else ""
            raise ConfigError(
                f"{section}.{name} is not an argument of {owner}; {hint}it accepts: {', '.join(accepted)}"
            )


def policy_choice(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The policy ``model.name`` names (``rocket`` when absent) and its constructor arguments: the other
    ``model.*`` keys."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    name = kwargs.pop(NAME_KEY, DEFAULT_POLICY)
    if name not in POLICIES:
        raise ConfigError(f"model.name={name!r} is not a known policy; choose one of {', '.join(POLICIES)}")
    return name, kwargs


def check_model(cfg: DictConfig) -> None:
    """``model.*`` are arguments of the policy ``model.name`` selects, the files they name exist
    (relative to where the command was run), and a policy that needs files is given them (unless a run
    resumes from ``ckpt_path``, which records the architecture)."""
    name, kwargs = policy_choice(cfg)
    kwargs.pop(MODEL_COMPILE, None)
    cls = policy_class(name)
    # Resuming builds a from_config policy from the checkpoint's record: its files are not read.
    resuming = bool(cfg.get("ckpt_path")) and hasattr(cls, "from_config")
    # A class's from_config hook (minetrain.models.policy) takes config keys besides the constructor's.
    builders = [cls.__init__, *([cls.from_config] if hasattr(cls, "from_config") else [])]
    check_kwargs("model", kwargs, builders, f"{cls.__name__} (model.name={name})")
    required = REQUIRED_MODEL_FILES.get(name, ())
    missing = [key for key in required if kwargs.get(key) is None]
    if missing and not set(kwargs) - set(required) and not resuming:
        given = " ".join(f"model.{key}=FILE" for key in missing)
        raise ConfigError(
            f"model.name={name} needs {' and '.join(f'model.{key}' for key in missing)}: give {given} "
            f"(OpenAI's published .model and .weights files), or {cls.__name__}'s architecture "
            "arguments (+model.KEY=VALUE) for a randomly initialised policy"
        )
    for key in MODEL_FILE_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str) and not resuming and not Path(to_absolute_path(value)).is_file():
            raise ConfigError(f"model.{key}={value} does not exist; give the path of the file")


def absolute_file_override(override: str) -> str:
    """``override`` with a relative file path of ``model.*`` made absolute (the command may run elsewhere)."""
    key, _, value = override.partition("=")
    if key.lstrip("+~") not in {f"model.{k}" for k in MODEL_FILE_KEYS} or value in ("", "null"):
        return override
    path = to_absolute_path(value.strip("'\""))
    return f"{key}={hydra_quote(path)}"


def model_arguments(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The policy's registry name and constructor arguments, file paths made absolute (the run starts
    in its run dir)."""
    name, kwargs = policy_choice(cfg)
    for key in MODEL_FILE_KEYS:
        if isinstance(kwargs.get(key), str):
            kwargs[key] = to_absolute_path(kwargs[key])
    return name, kwargs


def precision_choices() -> list[str]:
    """The precision values ``lightning.Trainer`` accepts (from Lightning's own type)."""
    from lightning.fabric.connector import _PRECISION_INPUT

    def flatten(tp: Any) -> list[Any]:
        args = typing.get_args(tp)
        return [v for arg in args for v in flatten(arg)] if args else [tp]

    return list(dict.fromkeys(str(v) for v in flatten(_PRECISION_INPUT)))


def check_logger(kind: str) -> None:
    if kind not in LOGGERS:
        raise ConfigError(f"logger={kind!r} is not one of {', '.join(LOGGERS)}")
    packages = LOGGER_PACKAGES.get(kind, ())
    for package in packages:
        try:
            importlib.import_module(package)
            return
        except ImportError:
            continue
    if packages:
        raise ConfigError(
            f"logger={kind} needs the {packages[0]} package, which is not installed: "
            f"pip install 'minetrain[{kind}]' (or use logger=csv)"
        )


def check_compile(value: Any) -> None:
    """``model.compile``: true, false or the name of a torch.compile backend."""
    from minetrain.models.compiled import compile_backends

    if isinstance(value, bool) or value in compile_backends():
        return
    raise ConfigError(
        f"model.compile={value!r} is not true, false or a torch.compile backend "
        f"({', '.join(compile_backends())}); e.g. model.compile=true"
    )


def check_config(cfg: DictConfig, trainer_own: Sequence[str]) -> None:
    """The composed config, before anything is built; ``trainer_own`` are the Trainer arguments minetrain
    sets itself."""
    import lightning as L

    from minetrain.offline import MineLightning
    from minetrain.offline.lightning_callbacks import EMA
    from minetrain.offline.mine_callbacks.behavior_clone import REDUCTIONS

    check_types(cfg)
    check_logger(str(cfg.logger))
    if cfg.get("objective_reduction") not in REDUCTIONS:
        raise ConfigError(
            f"objective_reduction={cfg.get('objective_reduction')!r} is not one of {', '.join(REDUCTIONS)}"
        )
    raw_dirs = cfg.data.dataset_dirs
    if raw_dirs is not None and not isinstance(raw_dirs, str) and not OmegaConf.is_list(raw_dirs):
        raise ConfigError(
            f"data.dataset_dirs={raw_dirs!r} is not a list of dirs; give data.dataset_dirs=[DIR,...]"
        )
    for name in cfg.trainer:
        if name in trainer_own:
            raise ConfigError(
                f"trainer.{name} is set by minetrain pretrain itself; remove it from the command"
            )
    check_kwargs("trainer", cfg.trainer, L.Trainer.__init__, "lightning.Trainer")
    precision = cfg.trainer.get("precision")
    if precision is not None and str(precision) not in precision_choices():
        raise ConfigError(
            f"trainer.precision={precision!r} is not a precision Lightning accepts; "
            f"choose one of {', '.join(precision_choices())}"
        )
    check_compile(cfg.model.get(MODEL_COMPILE, False))
    check_model(cfg)
    check_kwargs(
        "optim",
        cfg.optim,
        MineLightning.__init__,
        "MineLightning",
        ("mine_policy", "callbacks", "hyperparameters"),
    )
    check_kwargs("ema", [key for key in cfg.ema if key != "enabled"], EMA.__init__, "EMA")
