"""Decode every chunk of every modality and report each one that is missing or corrupt.

Training must not be the first to find a bad chunk hours into a run. Verification walks the LMDB
parts directly (not through ``TrajectoryStore``) so that one broken part or episode is reported as
one item and the rest is still checked. Work is split per (part, episode) and can run in
``jobs`` processes; each process opens its own read-only LMDB handles.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from minetrain.data.store import layout
from minetrain.data.store.handles import read_part_info, reader_env
from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.data.workers import die_with_parent
from minetrain.errors import DataError, UnsafeDataError


@dataclass(frozen=True)
class Problem:
    """One missing or corrupt item: a chunk (with its key), a part, or a whole dataset dir."""

    path: str
    modality: str
    episode: str
    key: str
    message: str

    def line(self) -> str:
        episode = f"episode {self.episode}" if self.episode else ""
        where = " ".join(x for x in (self.modality, episode, f"chunk {self.key}" if self.key else "") if x)
        return ": ".join(x for x in (self.path, where, self.message) if x)


@dataclass
class VerifyReport:
    chunks: int = 0
    episodes: int = 0  # distinct episodes per dataset dir, whatever the number of modalities holding them
    parts: int = 0
    problems: list[Problem] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Task:
    part: str
    modality: str
    episode: str
    episode_idx: int
    num_frames: int
    chunk_size: int


def _verify_episode(task: _Task) -> tuple[int, list[Problem]]:
    problems = []
    count = 0
    try:
        env = reader_env(Path(task.part))
    except DataError as exc:
        return 0, [Problem(task.part, task.modality, task.episode, "", str(exc))]
    for start in range(0, task.num_frames, task.chunk_size):
        key = layout.chunk_key(task.episode_idx, start)
        expected = min(task.chunk_size, task.num_frames - start)
        count += 1
        with env.begin(buffers=False) as txn:
            data = txn.get(key)
        if data is None:
            problems.append(Problem(task.part, task.modality, task.episode, key.decode(), "chunk is missing"))
            continue
        try:
            MODALITY_SPECS[task.modality].check(data, expected)
        except UnsafeDataError as exc:
            # Not one bad chunk among others: the dataset is hostile, so verifying stops here.
            raise UnsafeDataError(
                Problem(task.part, task.modality, task.episode, key.decode(), str(exc)).line()
            ) from None
        except DataError as exc:
            problems.append(Problem(task.part, task.modality, task.episode, key.decode(), str(exc)))
        except Exception as exc:
            message = f"does not decode ({type(exc).__name__}: {str(exc)[:80]})"
            problems.append(Problem(task.part, task.modality, task.episode, key.decode(), message))
    return count, problems


# Modalities every episode must have: without them there is nothing to train on.
CORE_MODALITIES = tuple(name for name, spec in MODALITY_SPECS.items() if spec.required)


def _plan(
    dataset_dirs: Sequence[str | Path], report: VerifyReport, require: Sequence[str] = ()
) -> list[_Task]:
    """The (part, episode) tasks of every dataset dir; dirs and parts that fail are reported."""
    tasks = []
    for dataset_dir in map(Path, dataset_dirs):
        try:
            layout.check_dataset_dir(dataset_dir)
        except layout.UnreadableError:
            raise
        except DataError as exc:
            report.problems.append(Problem(str(dataset_dir), "", "", "", str(exc).split(": ", 1)[-1]))
            continue
        with layout.permission_errors():
            tasks.extend(_plan_dataset(dataset_dir, report, require))
    return tasks


def _plan_dataset(dataset_dir: Path, report: VerifyReport, require: Sequence[str]) -> list[_Task]:
    tasks: list[_Task] = []
    folders = {m: layout.modality_folder(dataset_dir, m) for m in MODALITY_SPECS}
    if not any(folders.values()):
        message = f"no modality folder ({', '.join(MODALITY_SPECS)}); not a dataset dir"
        report.problems.append(Problem(str(dataset_dir), "", "", "", message))
        return tasks
    names: dict[str, set[str]] = {}
    for modality, folder in folders.items():
        if folder is None:
            continue
        parts = layout.list_parts(folder)
        if not parts:
            report.problems.append(Problem(str(folder), modality, "", "", "modality folder holds no parts"))
        known = True
        found: set[str] = set()
        for part in parts:
            report.parts += 1
            try:
                info = read_part_info(part)
            except UnsafeDataError:
                raise
            except DataError as exc:
                report.problems.append(Problem(str(part), modality, "", "", str(exc).split(": ", 1)[-1]))
                known = False
                continue
            for ci in info.chunk_infos:
                found.add(ci["episode"])
                tasks.append(
                    _Task(
                        str(part),
                        modality,
                        ci["episode"],
                        ci["episode_idx"],
                        ci["num_frames"],
                        info.chunk_size,
                    )
                )
        # A broken or empty folder is reported above; its episodes are unknown, not missing.
        if known and parts:
            names[modality] = found
    _check_complete(dataset_dir, folders, names, report, require)
    return tasks


def _check_complete(
    dataset_dir: Path,
    folders: dict[str, Path | None],
    names: dict[str, set[str]],
    report: VerifyReport,
    require: Sequence[str],
) -> None:
    """Report episodes a modality lacks, and modality folders that are missing altogether.

    A writer commits one modality at a time, so an interrupted one can leave episodes with frames
    but no actions or masks. Every episode must be in every modality folder that exists; image/
    and action/ must exist; a missing segmentation/ or meta_info/ is a warning unless required.
    """
    every = set().union(*names.values())
    report.episodes += len(every)
    for modality, folder in folders.items():
        if folder is None:
            if modality in CORE_MODALITIES or modality in require:
                message = f"no {modality}/ folder; the dataset has {len(every)} episodes without {modality}"
                report.problems.append(Problem(str(dataset_dir), modality, "", "", message))
            else:
                report.warnings.append(
                    f"{dataset_dir}: no {modality}/ folder (pass --require {modality} to make this an error)"
                )
            continue
        missing = sorted(every - names.get(modality, every))
        if missing:
            listed = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            message = (
                f"{len(missing)} of {len(every)} episodes missing ({listed}); rerun the writer that "
                "was interrupted (it adds what is missing) or remove these episodes"
            )
            report.problems.append(Problem(str(dataset_dir), modality, "", "", message))


def verify_datasets(
    dataset_dirs: Sequence[str | Path],
    jobs: int = 1,
    on_plan: Callable[[int], None] | None = None,
    on_episode: Callable[[], None] | None = None,
    require: Sequence[str] = (),
) -> VerifyReport:
    """Check every chunk of every part in ``dataset_dirs``; problems are collected, never raised.

    ``require`` names modalities whose missing folder is a problem rather than a warning.
    """
    report = VerifyReport(problems=[])
    tasks = _plan(dataset_dirs, report, require)
    if on_plan is not None:
        on_plan(len(tasks))
    results: Iterator[tuple[int, list[Problem]]]
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(
            max_workers=jobs, initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            results = pool.map(_verify_episode, tasks, chunksize=max(1, len(tasks) // (jobs * 8)))
            _collect(results, report, on_episode)
    else:
        _collect(map(_verify_episode, tasks), report, on_episode)
    return report


def _collect(
    results: Iterator[tuple[int, list[Problem]]], report: VerifyReport, on_episode: Callable[[], None] | None
) -> None:
    for count, problems in results:
        report.chunks += count
        report.problems.extend(problems)
        if on_episode is not None:
            on_episode()
