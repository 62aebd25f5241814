import pickle
from multiprocessing.reduction import ForkingPickler

import torch
import torch.multiprocessing  # registers torch's tensor pickling with ForkingPickler)

from minetrain.data.buffers import (
    DELIVERED,
    FILLING,
    FREE,
    HUGE_PAGE,
    BatchRing,
    BufferPool,
    private_uint8,
    shared_uint8,
    unreferenced,
)


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


def test_private_buffers_past_a_huge_page_hold_data_count_views_and_pickle_as_copies():
    shape = (3, HUGE_PAGE // 1000, 1000)
    buffer = private_uint8(shape)
    assert buffer.shape == shape and buffer.dtype == torch.uint8 and buffer.is_contiguous()
    assert not buffer.is_shared() and unreferenced(buffer)
    buffer.fill_(5)
    buffer[2, -1, -1] = 9
    row = buffer[2]
    assert not unreferenced(buffer)
    del row
    assert unreferenced(buffer)
    copy = pickle.loads(pickle.dumps(buffer[2]))
    assert copy.shape == shape[1:] and int(copy[-1, -1]) == 9 and int(copy[0, 0]) == 5


def test_the_pool_hands_out_a_buffer_again_only_once_it_is_dropped():
    pool = BufferPool(size=2)
    shape = (2, HUGE_PAGE)
    first = pool.take(shape)
    array = first.numpy()
    address = first.data_ptr()
    del first
    second = pool.take(shape)
    assert second.data_ptr() != address  # the numpy array still holds the first one
    del array, second
    held = pool.take(shape)  # the consumer keeps the tensor it was given, and nothing else
    assert held.data_ptr() == address
    assert pool.take(shape).data_ptr() != address
    del held
    assert pool.take(shape).data_ptr() == address


def test_a_packed_batch_unpacks_as_views_of_the_ring_and_returns_its_slot():
    ring = BatchRing({"image": (2, 3, 4)}, workers=1, slots=2)
    buffers = ring.take(0, {"image": (1, 3, 4)})
    assert ring.state[0].tolist() == [FILLING, FREE]
    buffers["image"].fill_(7)
    batch = {"image": buffers["image"], "mask": torch.ones(3, dtype=torch.uint8), "episode": ["a"]}
    data = ForkingPickler.dumps(ring.pack(0, batch))
    del batch, buffers

    received = ring.unpack(pickle.loads(data))
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
