import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from resume_harness import fit_recording

from minetrain.data import MineDataModule
from minetrain.data.sampler import EpisodeContinuousBatchSampler
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import ConfigError


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "d"
    return write_synthetic_dataset(out, episodes=8, frames=90, size=32, seed=1)


def make_module(dataset_dir, workers=0, continuous=True, batch_size=2, **params):
    return MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(dataset_dir)],
            frame_width=32,
            frame_height=32,
            win_len=16,
            enable_segment=True,
            **params,
        ),
        batch_size=batch_size,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        split_ratio=0.75,
        shuffle_episodes=True,
        episode_continuous_batch=continuous,
    )


def signature(batch) -> list:
    """What a batch holds, compactly: per slot (episode, first timestamp, condition sum, pixel sum)."""
    return [
        (
            episode,
            int(batch["timestamp"][i, 0]),
            int(batch["segment"]["obj_id"][i].sum()),
            int(batch["segment"]["obj_mask"][i].sum()),
            int(batch["image"][i].sum()),
        )
        for i, episode in enumerate(batch["episode"])
    ]


def epochs(loader, count):
    seen = []
    for epoch in range(count):
        loader.batch_sampler.set_epoch(epoch)
        seen.append([signature(batch) for batch in loader])
    return seen


def test_seed_configuration_is_accepted(dataset_dir):
    module = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(dataset_dir)],
            frame_width=224,
            frame_height=224,
            win_len=128,
            enable_segment=True,
        ),
        batch_size=8,
        num_workers=8,
        prefetch_factor=4,
        split_ratio=0.95,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    module.setup("fit")
    assert len(module.train_dataset) + len(module.val_dataset) == 8


def test_bad_configuration_is_a_config_error(dataset_dir):
    with pytest.raises(ConfigError, match="mode='video' is unknown"):
        MineDataModule(dict(mode="video", dataset_dirs=[str(dataset_dir)]))
    with pytest.raises(ConfigError, match="unknown data_params key"):
        MineDataModule(dict(mode="raw", dataset_dirs=[str(dataset_dir)], win_length=3))
    module = make_module(dataset_dir, batch_size=64)
    with pytest.raises(ConfigError, match="too few for batch_size 64"):
        module.train_dataloader()
    module = make_module(dataset_dir, continuous=False, batch_size=64)
    with pytest.raises(ConfigError, match=r"too few for batch_size 64 on 1 process.*dropped"):
        module.train_dataloader()


def test_continuous_batches_need_lightnings_sampler_off(dataset_dir):
    module = make_module(dataset_dir)
    module.trainer = SimpleNamespace(
        world_size=2, global_rank=1, _accelerator_connector=SimpleNamespace(use_distributed_sampler=True)
    )
    with pytest.raises(ConfigError, match="use_distributed_sampler=False"):
        module.train_dataloader()
    module.trainer._accelerator_connector.use_distributed_sampler = False
    sampler = module.train_dataloader().batch_sampler
    assert (sampler.num_replicas, sampler.rank) == (2, 1)


def test_workers_give_identical_batches_and_epochs_differ(dataset_dir):
    plain = epochs(make_module(dataset_dir, workers=0, condition_dropout=0.3).train_dataloader(), 2)
    workers = epochs(make_module(dataset_dir, workers=2, condition_dropout=0.3).train_dataloader(), 2)
    assert plain == workers
    assert plain[0] != plain[1]
    assert len(plain[0]) == len(plain[1]) > 3


def test_shuffled_windows_mode(dataset_dir):
    module = make_module(dataset_dir, continuous=False)
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        windows = [slot[:2] for batch in loader for slot in signature(batch)]
        assert len(windows) == len(set(windows)) == len(module.train_dataset) // 2 * 2
        orders.append(windows)
    assert orders[0] != orders[1]


def test_val_loader_is_ordered_and_disjoint_from_train(dataset_dir):
    module = make_module(dataset_dir, batch_size=1)
    val = [signature(b)[0][0] for b in module.val_dataloader()]
    train = {s[0] for b in module.train_dataloader() for s in signature(b)}
    assert val and not set(val) & train
    assert list(dict.fromkeys(val)) == module.val_dataset.episodes


def fit(dataset_dir, workers, max_steps, ckpt_dir, ckpt_path=None, every=None, continuous=True):
    datamodule = make_module(dataset_dir, workers=workers, continuous=continuous)
    return fit_recording(datamodule, signature, 3, max_steps, ckpt_dir, ckpt_path=ckpt_path, every=every)


@pytest.mark.parametrize(
    ("stop_in_epoch", "continuous"), [("middle", True), ("end", True), ("middle", False)]
)
def test_lightning_resume_continues_with_the_next_batch(dataset_dir, tmp_path, stop_in_epoch, continuous):
    reference, trainer = fit(dataset_dir, 0, -1, tmp_path, continuous=continuous)
    per_epoch = trainer.num_training_batches
    assert len(reference) == 3 * per_epoch
    stop = per_epoch + 3 if stop_in_epoch == "middle" else per_epoch
    before, _ = fit(dataset_dir, 2, stop, tmp_path, every=stop, continuous=continuous)
    checkpoints = sorted(tmp_path.glob("*.ckpt"))
    assert len(checkpoints) == 1
    after, _ = fit(dataset_dir, 2, -1, tmp_path, ckpt_path=checkpoints[0], continuous=continuous)
    assert before == reference[:stop]
    assert after == reference[stop:]


def _ddp_worker(rank, world, dataset_dir, out_dir, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loader = make_module(dataset_dir, workers=2 if rank == 0 else 0).train_dataloader()
        assert isinstance(loader.batch_sampler, EpisodeContinuousBatchSampler)
        assert loader.batch_sampler.num_replicas == world and loader.batch_sampler.rank == rank
        seen = []
        for epoch in range(2):
            loader.batch_sampler.set_epoch(epoch)
            for batch in loader:
                total = torch.tensor([1.0])
                dist.all_reduce(total)  # a rank with fewer batches would hang here
                seen.append([epoch, signature(batch)])
        dist.barrier()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(seen, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh interpreters importing torch and Lightning
def test_two_process_gloo_run(dataset_dir, tmp_path):
    port = 29500 + os.getpid() % 2000
    mp.spawn(_ddp_worker, args=(2, str(dataset_dir), str(tmp_path), port), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    for epoch in range(2):
        windows = [(slot[0], slot[1]) for seen in ranks for e, batch in seen if e == epoch for slot in batch]
        assert len(windows) == len(set(windows))


def test_worker_batches_reach_the_consumer_in_reused_shared_slots(dataset_dir):
    loader = make_module(dataset_dir, workers=2).train_dataloader()
    pointers = []
    for _ in range(2):
        for batch in loader:
            pointers.append(batch["image"].untyped_storage().data_ptr())
    ring = loader.batch_ring
    assert len(ring.buffers) == 2 and all(len(row) == 2 for row in ring.buffers), "prefetch_factor slots"
    slots = {slot["image"].untyped_storage().data_ptr() for row in ring.buffers for slot in row}
    in_slots = [pointer for pointer in pointers if pointer in slots]
    # A worker whose slots are all taken (this loop holds a batch while fetching the next) falls back.
    assert len(pointers) - len(in_slots) == int(ring.fallbacks.sum())
    assert len(in_slots) > 2 * len(slots), "slots are reused"


def test_worker_batches_the_consumer_keeps_are_never_overwritten(dataset_dir):
    expected = [signature(batch) for batch in make_module(dataset_dir, workers=0).train_dataloader()]
    loader = make_module(dataset_dir, workers=2).train_dataloader()
    kept = list(loader)
    assert [signature(batch) for batch in kept] == expected
    assert int(loader.batch_ring.fallbacks.sum()) > 0, "more batches than slots: fresh memory took over"


def test_in_process_batches_reuse_the_memory_of_dropped_batches_only(dataset_dir):
    loader = make_module(dataset_dir, workers=0).train_dataloader()
    expected = [signature(batch) for batch in loader]
    iterator = iter(loader)
    batch = next(iterator)
    first = batch["image"].untyped_storage().data_ptr()
    del batch
    # Nothing in the loader holds a batch it yielded: the consumer dropped it, so it is reused.
    assert next(iterator)["image"].untyped_storage().data_ptr() == first
    kept = list(loader)
    assert [signature(batch) for batch in kept] == expected
    assert len({batch["image"].untyped_storage().data_ptr() for batch in kept}) == len(kept)


def test_data_params_are_the_dataset_arguments() -> None:
    """DATA_PARAMS is the one list of data_params keys: RawDataset's arguments the module does not set
    itself, plus the mode; the loader's own arguments come from MineDataModule's signature."""
    import inspect

    from minetrain.data.datamodule import DATA_PARAMS, LOADER_PARAMS
    from minetrain.data.dataset import RawDataset
    from minetrain.data.event_dataset import EVENT_PARAMS, EventDataset

    set_by_module = {"split", "split_ratio", "shuffle_episodes", "store"}
    dataset_args = set(inspect.signature(RawDataset).parameters) - set_by_module
    assert set(DATA_PARAMS) == dataset_args | {"mode"}
    assert set(EVENT_PARAMS) <= set(inspect.signature(EventDataset).parameters)
    assert "batch_size" in LOADER_PARAMS and set(LOADER_PARAMS).isdisjoint(DATA_PARAMS)


def test_train_and_val_splits_share_one_store_index(dataset_dir):
    """The dirs are indexed once per run (at the published scale the index is most of setup), and
    each split still holds its own episodes of it."""
    from minetrain.data import RawDataset

    module = make_module(dataset_dir)
    module.setup()
    train, val = module.train_dataset, module.val_dataset
    assert train.store is val.store
    assert set(train.episodes).isdisjoint(val.episodes)
    assert sorted([*train.episodes, *val.episodes]) == sorted(train.store.episodes)
    alone = RawDataset(
        [str(dataset_dir)], 32, 32, 16, split="val", split_ratio=0.75, shuffle_episodes=True, seed=module.seed
    )
    assert alone.episodes == val.episodes and alone.window_counts == val.window_counts
    with pytest.raises(ConfigError, match="store=None"):
        RawDataset([str(dataset_dir)], 32, 32, 16, enable_segment=False, store=train.store)
