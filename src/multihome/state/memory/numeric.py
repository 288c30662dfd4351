"""numpy for agent memory, loaded on the first memory use instead of at gateway start (~0.3-0.4 s of
imports), with the process's BLAS set to one thread as it loads.

Every module of the memory store (and api/memory_embeddings.py) takes numpy from here, inside the
functions that use it, so the BLAS setting is in place before any BLAS call. Python's import lock runs
this module once; a thread asking while another is importing it waits for the import to finish.
A gateway worker is one event loop and a few helper threads, and a BLAS pool spread over the cores
waits for a free one on a busy machine (p95 9 ms for the coarse product). Where no BLAS is found, no change.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

threadpool_limits(1, user_api="blas")

__all__ = ["np"]
