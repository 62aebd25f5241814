"""An unreadable dataset dir or modality folder is one `error:` line naming it, in every reading command.

Root reads anything, so as root the commands run under ``setpriv`` without the capabilities that
bypass file permissions. All commands run in one subprocess: starting one per command costs more
than the commands themselves.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from minetrain.data.synth import write_synthetic_dataset

DROP_CAPS = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]

RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from minetrain.cli.main import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
        results.append([code, err.getvalue()])
    print(json.dumps(results))
    """
)


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop the DAC capabilities")
    probe = subprocess.run([setpriv, *DROP_CAPS, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return [setpriv, *DROP_CAPS]


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic_dataset(tmp_path / "ds", episodes=2, frames=20, size=16)


def test_unreadable_root_and_modality_folder(dataset, tmp_path):
    prefix = _unprivileged()
    other = shutil.copytree(dataset, tmp_path / "other")
    commands = []
    for data_dir in (dataset, other):
        commands += [
            ["data", "inspect", str(data_dir)],
            ["data", "verify", str(data_dir)],
            ["data", "episodes", str(data_dir)],
            ["data", "sample", str(data_dir), "--out", str(tmp_path / "s.png"), "--size", "16"],
            ["pretrain", f"data.dataset_dirs=[{data_dir}]", "trainer.max_steps=1", "logger=none"],
        ]
    os.chmod(dataset, 0)
    os.chmod(other / "image", 0)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c", RUNNER, json.dumps(commands)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        os.chmod(dataset, 0o755)
        os.chmod(other / "image", 0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for argv, (code, err), blocked in zip(
        commands, results, [dataset] * 5 + [other / "image"] * 5, strict=True
    ):
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err, (argv, err)
        assert lines[-1] == (
            f"error: {blocked}: permission denied; fix its permissions (chmod/chown) so this user can read it"
        ), argv
