"""The new interpreter of workers.in_new_process: `python -m mailrouter.newprocess`.

It reads (work, args) pickled from stdin, runs `work(*args)` and writes its result pickled
to stdout. It imports nothing of mailrouter's but what unpickling the work imports (for
the address book of a big reload, routing.files: no rules engine, no message parsing):
as `-m mailrouter.workers`, the daemon's imports cost the new process ~0.1 s of the
reload (bench/README.md, eighteenth pass).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """This process is killed when the thread that started it ends (PR_SET_PDEATHSIG):
    a worker, or a supervisor, killed never leaves it behind. `parent`: the PID of the
    process that started it, taken before the fork: a parent killed before the prctl (a
    supervisor SIGKILLed 6 ms after forking a worker) left the child to init, the
    signal never came, and an orphan worker served mail on the ports; it exits at once."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: orphans are possible, say so
        import logging                  # (only then: a new process imports what it needs)
        logging.getLogger("mailrouter.workers").warning(
            "event=no_pdeathsig workers may outlive a killed supervisor")
    if os.getppid() != parent:         # gone already: nobody to work for
        os._exit(1)


def _run_sent_work() -> int:
    """(work, args) from stdin, the pickled result to stdout; argv[1]: the parent's PID."""
    die_with_parent(int(sys.argv[1]))
    work, args = pickle.load(sys.stdin.buffer)
    sys.stdout.buffer.write(pickle.dumps(work(*args), protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_run_sent_work())
