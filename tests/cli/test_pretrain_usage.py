"""`minetrain pretrain` as a user types it: printed commands that run as pasted, checkpoint paths as
minetrain names them, loggers, bad values (one `error:` line each) and no library noise."""

import os
import shlex
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_pretrain import SMALL, side_by_side
from test_pretrain_launch import minetrain_command

from minetrain.data.synth import write_synthetic_dataset

TINY = [*SMALL[3:], "save_freq=2", "name=cmds"]


def run(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MINETRAIN_CACHE": str(cwd / "cache")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def pretrain(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "minetrain.cli.main", "pretrain", *args], cwd)


def printed(stdout: str, label: str) -> list[str]:
    """The command after ``label:`` in the summary, with `minetrain` as the installed console script."""
    (line,) = [line for line in stdout.splitlines() if line.startswith(f"{label}:")]
    argv = shlex.split(line.removeprefix(f"{label}:"))
    assert argv[0] == "minetrain", line
    return [*minetrain_command(), *argv[1:]]


def one_error_line(code: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """3 steps on a dataset given by a relative path; the directory it ran in."""
    cwd = tmp_path_factory.mktemp("first")
    write_synthetic_dataset(cwd / "data", episodes=4, frames=60, size=32, seed=1)
    result = pretrain(["data.dataset_dirs=[data]", *TINY, "trainer.max_steps=3"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result


@pytest.mark.slow
def test_printed_resume_evaluate_and_export_run_as_pasted_elsewhere(first_run, tmp_path: Path):
    cwd, first = first_run
    resume = printed(first.stdout, "Resume")
    assert "trainer.max_steps=6" in resume and f"data.dataset_dirs=[{cwd / 'data'}]" in resume

    # Pasted in another directory: the relative dataset path was made absolute, the run is extended.
    second = run(resume, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "cmds").iterdir()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6

    # Evaluating reads the checkpoints, exporting writes beside them: independent, so run at once.
    evaluate, export = side_by_side(
        partial(run, printed(second.stdout, "Evaluate"), tmp_path),
        partial(run, printed(second.stdout, "Export"), tmp_path),
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert export.returncode == 0, export.stderr[-3000:]
    assert (run_dir / "export" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_run_prints_no_lightning_tips_or_deprecations(first_run):
    _, first = first_run
    assert "💡" not in first.stderr and "Tip:" not in first.stderr
    assert "LeafSpec" not in first.stderr


@pytest.mark.slow
def test_ckpt_path_takes_checkpoint_names_with_equals_unquoted_and_logger_none_trains(first_run):
    """One run for two things: resuming from a relative checkpoint path holding ``=``, with no logger."""
    cwd, _ = first_run
    (run_dir,) = (cwd / "outputs" / "cmds").iterdir()
    name = "ckpt-epoch=0-step=3.ckpt"
    assert (run_dir / "checkpoints" / name).is_file()
    relative = run_dir.relative_to(cwd) / "checkpoints" / name
    result = pretrain(
        ["data.dataset_dirs=[data]", *TINY, "trainer.max_steps=4", f"ckpt_path={relative}", "logger=none"],
        cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in result.stderr + result.stdout
    (resumed_dir,) = set((cwd / "outputs" / "cmds").iterdir()) - {run_dir}
    assert (resumed_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.rglob("metrics.csv")) and not list(resumed_dir.rglob("metrics.csv")), "csv, then none"


@pytest.mark.parametrize("quote", ["", "'"])
def test_ckpt_path_value_with_equals_is_read_quoted_or_not(in_process, capsys, quote: str):
    path = "outputs/demo/x/checkpoints/ckpt-epoch=0-step=6.ckpt"
    assert in_process(["pretrain", f"ckpt_path={quote}{path}{quote}", "--cfg", "job"]) == 0
    assert f"ckpt_path: {path}" in capsys.readouterr().out


def test_dataset_dirs_given_as_one_dir_is_a_list_of_one(in_process, capsys):
    assert in_process(["pretrain", "data.dataset_dirs=/data/set=1", "--cfg", "job"]) == 0
    assert "dataset_dirs:\n  - /data/set=1\n" in capsys.readouterr().out


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_logger_without_its_package_names_the_extra(
    in_process, capsys, monkeypatch: pytest.MonkeyPatch, eval_dataset: Path, logger: str
):
    for package in ("tensorboard", "tensorboardX", "wandb"):
        monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    args = [
        "pretrain",
        f"data.dataset_dirs=[{eval_dataset}]",
        *TINY,
        "trainer.max_steps=1",
        f"logger={logger}",
    ]
    line = one_error_line(in_process(args), capsys.readouterr().err)
    assert f"logger={logger}" in line and f"pip install 'minetrain[{logger}]'" in line


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.batch_size=abc", ["data.batch_size", "integer"]),
        ("trainer.precision=17", ["trainer.precision", "bf16-mixed", "32-true"]),
        ("+trainer.max_step=5", ["trainer.max_step ", "did you mean trainer.max_steps"]),
        ("+model.nonsense=1", ["model.nonsense", "RocketPolicy", "hiddim"]),
        ("trainer.no_such=1", ["trainer.no_such", "max_steps", "+trainer.no_such="]),
        ("trainer.max_epoch=1", ["did you mean trainer.max_epochs"]),
        ("data.batch_size=[1,", ["data.batch_size=[1,", "quote"]),
        ("+trainer.callbacks=[]", ["trainer.callbacks", "minetrain pretrain itself"]),
        ("data.shuffle_episodes=2", ["data.shuffle_episodes", "true or false"]),
        ("objective_reduction=frames", ["objective_reduction='frames'", "sum, mean"]),
        ("ema.first_update=zero", ["first_update='zero'", "blend, copy"]),
        ("optim.weight_decay_matrices_only=1", ["optim.weight_decay_matrices_only", "true or false"]),
    ],
)
def test_bad_values_are_one_error_line(
    in_process, capsys, eval_dataset: Path, override: str, named: list[str]
):
    code = in_process(
        ["pretrain", f"data.dataset_dirs=[{eval_dataset}]", *TINY, "trainer.max_steps=1", override]
    )
    line = one_error_line(code, capsys.readouterr().err)
    assert all(part in line for part in named), line


@pytest.mark.parametrize(
    "value", ["/a/b", "/a/ckpt-epoch=0-step=6.ckpt", "/a b/c,d[e]", "it's", "end\\", "a\\'b"]
)
def test_hydra_quote_gives_back_the_value(value: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from minetrain.cli.pretrain_config import hydra_quote

    assert OverridesParser.create().parse_override(f"key={hydra_quote(value)}").value() == value


def test_run_id_comes_from_the_launcher(monkeypatch: pytest.MonkeyPatch):
    from minetrain.cli.pretrain_run import run_id

    for name in ("MINETRAIN_RUN_ID", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert run_id()[:2] == "20"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert run_id() == "slurm-77.0"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    assert run_id() == "job-a"
    monkeypatch.setenv("MINETRAIN_RUN_ID", "mine")
    assert run_id() == "mine"


def test_demo_dataset_is_complete_after_an_interruption_or_a_concurrent_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import minetrain.data.synth as synth
    from minetrain.cli.pretrain_data import demo_dataset

    cfg = OmegaConf.create(
        {"demo_data": {"cache_dir": str(tmp_path), "episodes": 2, "frames": 40, "size": 32, "seed": 0}}
    )
    real = synth.write_synthetic_dataset

    def interrupted(out_dir: Path, **params) -> Path:
        (Path(out_dir) / "image").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_synthetic_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo_dataset(cfg)
    monkeypatch.setattr(synth, "write_synthetic_dataset", real)
    out = demo_dataset(cfg)
    assert (out / "image").is_dir() and (out / "action").is_dir()

    def other_process_finishes_first(out_dir: Path, **params) -> Path:
        final = Path(str(out_dir).rsplit(".tmp-", 1)[0])
        real(final, **params)
        (final / "from-the-other-process").touch()
        return real(out_dir, **params)

    cfg.demo_data.seed = 1
    monkeypatch.setattr(synth, "write_synthetic_dataset", other_process_finishes_first)
    second = demo_dataset(cfg)
    assert (second / "from-the-other-process").is_file() and (second / "action").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, second.name])
