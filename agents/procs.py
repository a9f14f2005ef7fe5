"""Child-process plumbing shared by the supervisor and the embedded server launcher."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def detach_from_terminal_and_follow_parent() -> None:
    """`preexec_fn` for supervised children.

    A new session keeps a terminal's Ctrl-C away from the child, so the supervisor alone
    decides the shutdown order (agents drain before the server stops). On Linux the child
    also gets SIGTERM if the supervisor dies, so a kill -9'd `omoi up` leaves no orphans.
    """
    import os

    os.setsid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
