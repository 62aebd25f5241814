"""Test isolation shared by every test directory."""

import os

import pytest
import torch.distributed as dist

# Set by Lightning when a DDP strategy runs inside the test process (the seed's trainer, devices=1).
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


@pytest.fixture(autouse=True)
def no_leftover_process_group():
    """Close a process group a test left open and restore the distributed environment variables.

    Otherwise the group keeps MASTER_PORT bound, and a later subprocess that inherits the variable
    fails with EADDRINUSE.
    """
    saved = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    yield
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
