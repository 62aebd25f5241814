import pickle
from multiprocessing.reduction import ForkingPickler

import torch
import torch.multiprocessing  # registers torch's tensor pickling with ForkingPickler)

from minetrain.data.buffers import DELIVERED, FILLING, FREE, BatchRing, shared_uint8, unreferenced


def test_shared_buffers_count_their_views_and_arrays():
    buffer = shared_uint8((2, 3, 4))
    assert buffer.is_shared() and buffer.shape == (2, 3, 4)
    assert unreferenced(buffer)
    view = buffer[1]
    assert not unreferenced(buffer)
    del view
    array = buffer.numpy()
    assert not unreferenced(buffer)
    del array
    assert unreferenced(buffer)


def test_a_packed_batch_unpickles_as_views_of_the_ring_and_returns_its_slot():
    ring = BatchRing({"image": (2, 3, 4)}, workers=1, slots=2)
    buffers = ring.take(0, {"image": (1, 3, 4)})
    assert ring.state[0].tolist() == [FILLING, FREE]
    buffers["image"].fill_(7)
    batch = {"image": buffers["image"], "mask": torch.ones(3, dtype=torch.uint8), "episode": ["a"]}
    data = ForkingPickler.dumps(ring.pack(0, batch))
    del batch, buffers

    received = pickle.loads(data)
    slot = ring.buffers[0][0]["image"]
    assert received["image"].untyped_storage().data_ptr() == slot.untyped_storage().data_ptr()
    assert received["image"].shape == (1, 3, 4) and int(received["image"].sum()) == 7 * 12
    assert received["mask"].dtype == torch.uint8 and not received["mask"].is_shared()
    assert received["episode"] == ["a"]
    assert ring.state[0, 0] == DELIVERED
    ring.release_unreferenced()
    assert ring.state[0, 0] == DELIVERED, "a slot the consumer still holds must not be reused"
    del received
    ring.release_unreferenced()
    assert ring.state[0, 0] == FREE


def test_a_worker_without_a_fitting_free_slot_falls_back():
    ring = BatchRing({"image": (2, 3, 4)}, workers=2, slots=1)
    assert ring.take(1, {"image": (3, 3, 4)}) is None, "more rows than a slot holds"
    assert ring.take(1, {"image": (2, 3, 4)}) is not None
    assert ring.take(1, {"image": (2, 3, 4)}) is None, "the worker's only slot is busy"
    assert ring.take(0, {"image": (2, 3, 4)}) is not None, "slots are per worker"
    assert ring.fallbacks.tolist() == [0, 2]
