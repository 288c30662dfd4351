"""End a command that served through the upstream client without the interpreter's finalization.

pyqwest runs requests on Tokio threads that outlive the event loop. One that reports a request's end
(pyqwest calls the loop's call_soon_threadsafe) while the interpreter finalizes is stopped by CPython
inside take_gil with pthread_exit, whose forced unwind through Rust frames aborts the process: SIGABRT
instead of the command's exit status (a core dump of a 5-call script, ~1 run in 8, 2026-12-06; the
gateway's SIGTERM stop never finalizes: uvicorn re-raises the signal, which ends the process as is).
So, once the command's own shutdown is done (the lifespan closed every pool and wrote every row),
what a normal exit does before it finalizes is done here, then the process ends with its status.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def end_process(code: int) -> NoReturn:
    main = threading.main_thread()
    for thread in threading.enumerate():  # as the interpreter's exit: non-daemon threads run to their end
        if thread is not main and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the access log's last lines, logging.shutdown (every handler flushed)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe nobody reads any more
            pass
    os._exit(code)
