"""Child processes owned by the harness: started with their output in a log file, stopped by PID."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    The kernel hands out ephemeral ports round-robin, so two parallel runs asking at the same moment get
    different ports; the small window between closing this socket and the child binding it is covered by the
    callers retrying on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # If the test runner is killed hard, the kernel sends SIGKILL to the child: no orphaned kube-apiserver.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(data[-lines:])


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains `marker` (a workdir path, say)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            pid = int(entry)
            if marker in pid_cmdline(pid) and pid_alive(pid):
                found.append(pid)
    return found


def terminate_pid(pid: int, *, grace: float, poll: Callable[[], bool] | None = None) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone.

    `poll` reaps our own children (Popen.poll) so they do not linger as zombies.
    """

    def gone() -> bool:
        if poll is not None and poll():
            return True
        return not pid_alive(pid)

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if gone():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            # A stopped process (a test's SIGSTOP) would never act on SIGTERM.
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)
    if not gone():
        raise RuntimeError(f"process {pid} survived SIGKILL: {pid_cmdline(pid)!r}")


class ManagedProcess:
    """One child process whose stdout and stderr go to `log_path`."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Own process group: a terminal Ctrl-C reaches only the harness, which stops them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        terminate_pid(self.pid, grace=grace, poll=lambda: self.popen.poll() is not None)
        self.popen.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)
