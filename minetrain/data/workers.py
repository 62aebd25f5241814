"""Worker processes that do not outlive the command that started them.

A ``ProcessPoolExecutor`` worker waits on a pipe whose write end every forked worker also holds,
so when the main process is killed (SIGKILL, or SIGTERM without cleanup) the workers sleep
forever. Linux can signal a child when its parent dies (``prctl(PR_SET_PDEATHSIG)``); pools that
run batch commands pass ``die_with_parent`` as their initializer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits; exit now if it already has."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died between fork and prctl; then nothing would signal us.
    if os.getppid() != parent_pid:
        os._exit(1)
