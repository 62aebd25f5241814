"""The benchmarks still run: ``run_all.py --quick`` and ``bench_index.py --quick``, no reference;
``bench_vpt.py --quick`` with the reference when its venv exists."""

import json
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")


def test_run_all_quick_writes_a_table_of_every_figure(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--no-reference"]
    cmd += ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    figures = results["median"]["minetrain"]
    assert set(figures) == {
        "loader_w0",
        "loader_w2",
        "model_train",
        "model_stream",
        "model_rss",
        "train_wall",
        "train_cpu",
        "train_pss",
        "train_rss",
        "train_default_wall",
        "train_default_cpu",
        "vpt_train",
        "vpt_rss",
        "vpt_step_memory",
        "vpt_tensor_peak",
    }
    assert set(results["range"]["minetrain"]) == set(figures)
    assert all(value > 0 for value in figures.values())
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.startswith("| measure | unit | minetrain |")
    assert "loader, 2 workers" in table
    assert "B: defaults" in table
    assert "VPT fine-tune step (1 thread)" in table


def test_bench_index_quick_reports_every_figure(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCHMARKS / "bench_index.py"), "--quick", "--no-reference"]
    cmd += ["--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "index.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "index.json").read_text())
    ((ours,),) = [size["minetrain"] for size in results.values()]
    assert ours["windows"] > 0 and 0 <= ours["left_out"] < 8 * 8
    assert ours["left_out_whole_episodes"] > ours["left_out"]
    assert min(ours["state_bytes"], ours["setup_s"], ours["plan_s"], ours["inspect_s"]) > 0
    assert "| windows left out per epoch |" in done.stdout


def test_bench_vpt_quick_reports_both_libraries_from_the_same_start(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCHMARKS / "bench_vpt.py"), "--quick", "--json", str(tmp_path / "vpt.json")]
    if not REFERENCE_PYTHON.exists():
        cmd.append("--no-reference")  # minetrain's half still runs; the comparison needs the venv
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads((tmp_path / "vpt.json").read_text())["figures"]
    ours = figures["minetrain"]
    assert min(ours["steps_per_cpu_s"] + ours["peak_rss_mb"] + ours["tensor_peak_mb"]) > 0
    # Live tensors are part of the process: parameters, AdamW state and activations, not its libraries.
    assert max(ours["tensor_peak_mb"]) < min(ours["peak_rss_mb"])
    if REFERENCE_PYTHON.exists():
        assert set(figures) == {"minetrain", "reference", "ratio"}
        losses = re.findall(r"first-step loss ([0-9.]+)", done.stdout)
        assert len(losses) == 2 and losses[0] == losses[1], done.stdout


def test_bench_store_decode_paths_count_every_frame_on_one_core() -> None:
    """Each row of issue 21's table decodes every frame, and ``one_core`` pins then restores."""
    import os

    import numpy as np

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_store
    finally:
        sys.path.remove(str(BENCHMARKS))
    from minetrain.data.store.codecs import encode_video

    rng = np.random.default_rng(0)
    chunks = [encode_video(rng.integers(0, 255, (8, 32, 48, 3), dtype=np.uint8)) for _ in range(2)]
    allowed = os.sched_getaffinity(0)
    with bench_store.one_core() as core:
        assert os.sched_getaffinity(0) == {core} and core in allowed
        packets = bench_store.demuxed(chunks)
        counts = [
            bench_store.to_ndarray_rgb(chunks),
            bench_store.to_ndarray_yuv(chunks),
            bench_store.old_loader_method(chunks),
            bench_store.reused_context(packets, rgb=True)(),
            bench_store.reused_context(packets, rgb=False)(),
        ]
        wall, cpu = bench_store.measure(lambda: bench_store.to_ndarray_rgb(chunks))
    assert os.sched_getaffinity(0) == allowed
    assert counts == [16] * 5
    assert wall > 0 and cpu > 0
