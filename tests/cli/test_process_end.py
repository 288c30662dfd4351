"""`end_process` (cli/process_end.py) ends `serve` and `demo` without the interpreter's finalization,
so it must first do what a normal exit does: let non-daemon threads finish, run the atexit handlers
(the access log's last lines, logging.shutdown), flush stdout and stderr; then exit with the status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import atexit, logging, sys, threading, time
    from pathlib import Path
    from multihome.cli.process_end import end_process

    out = Path(sys.argv[1])
    handler = logging.FileHandler(out / "log.txt", delay=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("t").addHandler(handler)
    logging.getLogger("t").setLevel(logging.INFO)
    logging.getLogger("t").info("a log line")
    atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
    started = threading.Event()

    def late() -> None:
        started.set()
        time.sleep(0.5)
        (out / "thread.txt").write_text("finished")

    threading.Thread(target=late).start()
    started.wait()
    sys.stdout.write("buffered, no newline")
    end_process(3)
    """
)


def test_end_process_exits_with_its_status_after_what_a_normal_exit_does(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,  # a bound, not a timing
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "thread.txt").read_text() == "finished"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "a log line\n"
