"""Shared memory of DataLoader workers: the bound, the /dev/shm check, its release, the off switch."""

import gc
import math
import multiprocessing
import threading

import pytest
import torch
from resume_harness import fit_recording
from test_datamodule import make_module, signature

from minetrain.data import shm
from minetrain.data.buffers import FREE
from minetrain.data.shm import HELD_BY_TRAINING, process_tree, shared_memory_held, shared_memory_need
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import ConfigError


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "d"
    return write_synthetic_dataset(out, episodes=6, frames=90, size=32, seed=3)


def held() -> int:
    gc.collect()
    return shared_memory_held(process_tree())


# A ring's slot states and fallback counters: a shared page each while the ring lives.
RING_BOOKKEEPING = 2 * 4096


def equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[key], b[key]) for key in a)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def test_the_bound_is_prefetch_factor_slots_per_worker_as_torch_keeps_in_flight(dataset_dir):
    module = make_module(dataset_dir, workers=2)
    module.prefetch_factor = 3
    loader = module.train_dataloader()
    iterator = iter(loader)
    next(iterator)
    ring = loader.batch_ring
    batch = 2 * 16 * 32 * 32 * (3 + 1)  # batch_size x win_len x frame x (RGB + condition mask)
    assert [len(row) for row in ring.buffers] == [3, 3]
    assert ring.nbytes == 2 * 3 * batch  # num_workers x prefetch_factor batches
    assert shared_memory_need(batch, 2, 3) == (2 * 3 + HELD_BY_TRAINING) * batch
    assert shared_memory_need(batch, 0, 3) == 0
    del iterator
    # rocket1: 8 workers x prefetch_factor 4 (+2 held) x batch 8 x 128 x 224^2 (+ masks) per rank.
    rocket1 = 8 * 128 * 224 * 224 * 4
    assert rocket1 == 196 * 2**20 and shared_memory_need(rocket1, 8, 4, ranks=8) == 8 * 34 * rocket1


def test_too_little_dev_shm_is_one_error_line_naming_need_free_and_remedies(dataset_dir, monkeypatch):
    monkeypatch.setattr(shm, "free_bytes", lambda path=shm.SHM_DIR: 64 << 20)
    big = make_module(dataset_dir, workers=2)
    big.prefetch_factor = 8  # (2 x 8 + 2) x 2 x 16 x 32^2 x 4 = 2.4 MB: fits
    iter(big.train_dataloader())  # no error: workers start
    monkeypatch.setattr(shm, "free_bytes", lambda path=shm.SHM_DIR: 500_000)
    loader = make_module(dataset_dir, workers=2).train_dataloader()
    with pytest.raises(ConfigError) as caught:
        iter(loader)
    message = str(caught.value)
    need = (2 * 2 + HELD_BY_TRAINING) * 2 * 16 * 32 * 32 * 4
    assert "\n" not in message
    assert f"need {need:,} bytes" in message and "500,000 (0.00 GiB) are free" in message
    assert f"docker run --shm-size={math.ceil(need / 2**30) + 1}g" in message
    for setting in (
        "num_workers",
        "prefetch_factor",
        "batch_size",
        "win_len",
        "frame_width",
        "shared_batch_ring",
    ):
        assert f"data.{setting}" in message
    off = make_module(dataset_dir, workers=2)
    off.shared_batch_ring = False
    with pytest.raises(ConfigError):
        iter(off.train_dataloader())  # torch's path needs as much
    iter(make_module(dataset_dir, workers=0).train_dataloader())  # no workers, no shared memory


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "torch"])
def test_shared_memory_is_given_back_when_iteration_stops(dataset_dir, ring):
    module = make_module(dataset_dir, workers=2)
    module.shared_batch_ring = ring
    loader = module.train_dataloader()
    baseline = held()  # the datasets' shared epoch counters
    idle = baseline + (RING_BOOKKEEPING if ring else 0)

    for count, batch in enumerate(loader):  # exhausted; persistent workers stay, idle
        assert batch["image"].is_shared()
        if count == 1:
            assert held() > idle
    del batch
    assert held() == idle

    for count, batch in enumerate(loader):  # a break
        if count == 2 and batch["image"].is_shared():
            break
    del batch
    assert held() == baseline

    iterator = iter(loader)  # an iterator deleted midway
    next(iterator)
    del iterator
    assert held() == baseline

    kept = list(loader)  # batches training keeps stay valid after the pass; freed with them
    assert held() > idle
    del kept
    assert held() == idle


def test_dropping_the_loader_stops_its_persistent_workers_without_a_gc_pass(dataset_dir):
    """No reference cycle keeps a dropped loader's workers and ring alive until the collector runs."""
    module = make_module(dataset_dir, workers=2)
    loader = module.train_dataloader()
    gc.collect()
    baseline = shared_memory_held(process_tree())
    others = set(multiprocessing.active_children())  # what earlier tests in this process left running
    gc.disable()
    try:
        for _ in loader:  # exhausted: the persistent workers stay, with the ring
            pass
        workers = set(multiprocessing.active_children()) - others
        assert len(workers) == 2
        del loader, module, _
        assert not workers & set(multiprocessing.active_children())
        assert shared_memory_held(process_tree()) < baseline
    finally:
        gc.enable()


def test_a_pass_cut_short_keeps_its_workers_and_frees_the_slots_of_the_dropped_batches(dataset_dir):
    """Lightning leaves a pass open: at its last batch (it knows the length), or cut short by
    ``limit_train_batches``, when the resumed workers' batches in flight are dropped, and their slots
    must come back."""
    expected = [signature(batch) for batch in make_module(dataset_dir, workers=0).train_dataloader()]
    loader = make_module(dataset_dir, workers=2).train_dataloader()
    idle = held() + RING_BOOKKEEPING
    whole = iter(loader)
    assert [signature(next(whole)) for _ in range(len(loader))] == expected
    kept, workers = loader.batch_ring, [worker.pid for worker in loader._iterator._workers]
    assert [signature(batch) for batch in loader] == expected
    del whole
    cut = iter(loader)
    next(cut)
    assert [signature(batch) for batch in loader] == expected
    assert loader.batch_ring is kept, "the workers and their ring stay"
    assert [worker.pid for worker in loader._iterator._workers] == workers
    del cut
    kept.release_unreferenced()
    assert (kept.state == FREE).all(), "every slot is handed back once its batch is dropped"
    assert held() == idle


def test_slot_tensors_are_pinned_off_the_training_thread_and_bit_for_bit(dataset_dir, monkeypatch):
    """``pin_memory`` on a GPU machine; without CUDA here a fake pin (a copy) records its thread."""
    expected = list(make_module(dataset_dir, workers=0).train_dataloader())
    pinned_on, pinned = [], {}  # the copies stay alive: no other tensor takes their address

    def fake_pin(tensor, device=None):
        pinned_on.append((threading.current_thread(), tensor.shape))
        copy = tensor.clone()
        pinned[copy.data_ptr()] = copy
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda tensor, device=None: tensor.data_ptr() in pinned)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cpu"))
    monkeypatch.setattr(torch.accelerator, "current_device_index", lambda: 0)
    monkeypatch.setattr(torch.accelerator, "set_device_index", lambda index: None)
    loader = make_module(dataset_dir, workers=2).train_dataloader()
    loader.pin_memory = True
    for _ in range(2):  # the second pass through resumed workers
        received = list(loader)
        assert len(received) == len(expected) and all(map(equal, received, expected))
    images = [thread for thread, shape in pinned_on if shape == expected[0]["image"].shape]
    assert len(images) == 2 * len(expected), "each batch's frames are pinned once"
    assert threading.main_thread() not in {thread for thread, _ in pinned_on}
    del received
    loader.batch_ring.release_unreferenced()
    assert (loader.batch_ring.state == FREE).all(), "pinned copies hold no slot"


def test_shared_memory_is_given_back_when_the_trainer_ends(dataset_dir, tmp_path):
    for max_steps in (-1, 3):  # two whole epochs; three steps, mid-epoch
        module = make_module(dataset_dir, workers=2)
        module.setup()
        baseline = held()  # the datasets' shared epoch counters
        seen = fit_recording(module, signature, max_epochs=2, max_steps=max_steps, ckpt_dir=tmp_path)[0]
        assert seen
        assert held() == baseline
        del module, seen


def test_the_off_switch_gives_the_same_batches_bit_for_bit(dataset_dir):
    loaders = []
    for workers, ring in ((0, True), (2, True), (2, False)):
        module = make_module(dataset_dir, workers=workers)
        module.shared_batch_ring = ring
        loaders.append(module.train_dataloader())
    count = 0
    for epoch in range(2):
        for loader in loaders:
            loader.batch_sampler.set_epoch(epoch)
        for in_process, on, off in zip(*loaders, strict=True):
            assert equal(on, in_process) and equal(off, in_process)
            count += 1
    assert count > 4
    assert loaders[1].batch_ring is not None and loaders[2].batch_ring is None
