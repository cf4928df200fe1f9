"""Bytewax worker threads keep one Python thread state for their whole life.

With two or more workers or processes, Bytewax runs each worker on a thread it
starts from Rust (with one worker, on the main thread). Such a thread has no
Python thread state of its own: every time it calls into Python (each operator
activation, each item routed to a partitioned sink, each item pickled or
unpickled for another process), PyO3 takes the GIL with ``PyGILState_Ensure``,
CPython creates a thread state for the call and destroys it at the matching
``PyGILState_Release``, with the 16 KiB frame stack it mapped for the call's
first frame. Anything kept in a ``threading.local`` is lost between calls too.

Measured on the telemetry flow (10,000 sites, 2 cores): with two processes,
36,000 mmap calls per process for 600,000 messages, 4,400 once each worker
thread keeps its state (one process, one worker on the main thread: 4,500);
messages per CPU-second of two processes 130k/122k -> 147k/154k against one
process's 186k-202k (``vpp bench telemetry``, old and new alternated; one
process with two workers 140k-153k -> 154k-173k). ``docs/measurements.md``,
"Worker threads' Python thread states".

One ``PyGILState_Ensure`` left outstanding keeps the thread's nesting count
above zero, so the state lives as long as the thread and every later call only
takes the GIL: the pattern CPython's C-API documentation gives for threads not
created by Python that call into it again and again (python/cpython#146219;
PyO3 issue 2495 describes the lost state).
"""

from __future__ import annotations

import ctypes
import threading

_thread = threading.local()


def keep_thread_state() -> None:
    """Keep the calling thread's Python thread state until the thread ends (once per thread; idempotent).

    Call it from Python code that Bytewax runs on every worker before items flow (a source's
    ``list_parts``). The flag lives in the thread state it keeps: a thread whose state is still
    dropped after each call finds it unset and pins it now.
    """
    if getattr(_thread, "kept", False):
        return
    ctypes.pythonapi.PyGILState_Ensure()
    _thread.kept = True
