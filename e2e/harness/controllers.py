"""Run N `python -m controller` processes against a cluster, each with its own log file and HTTP port."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.harness.binaries import REPO_ROOT
from e2e.harness.processes import ManagedProcess, free_port, tail


@dataclass(frozen=True)
class _Controller:
    process: ManagedProcess
    identity: str
    http_addr: str


class ControllerSet:
    """Calling it starts processes: `controllers(3)` returns the new indices [0, 1, 2].

    All processes of one set share a Lease (unique per set unless `lease_name` is given), so tests on the
    session-wide cluster never fight over leadership with each other.
    """

    def __init__(
        self,
        logdir: Path,
        *,
        default_kubeconfig: Path | None = None,
        command: Sequence[str] = (sys.executable, "-m", "controller"),
    ) -> None:
        self.logdir = logdir
        self.default_kubeconfig = default_kubeconfig
        self.command = list(command)
        self.lease_name = f"stablelb-{uuid.uuid4().hex[:8]}"
        self._procs: list[_Controller] = []

    def __call__(
        self,
        n: int = 1,
        *,
        kubeconfig: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        leader_elect: bool = True,
        lease_namespace: str = "kube-system",
        lease_name: str | None = None,
        deprecated_http_addr: bool = False,
    ) -> list[int]:
        """Starts `n` controllers; `args` are extra flags, `env` extra variables (OTEL_*, say).

        Each serves metrics and probes on one address (`http_addr(i)`), given as --metrics-bind-address and
        --health-probe-bind-address, or as the deprecated --http-addr alias with `deprecated_http_addr`.
        """
        kubeconfig = kubeconfig or self.default_kubeconfig
        if kubeconfig is None:
            raise ValueError("no kubeconfig given and no default for this ControllerSet")
        started = []
        for _ in range(n):
            i = len(self._procs)
            identity = f"controller-{i}"
            http_addr = f"127.0.0.1:{free_port()}"
            if deprecated_http_addr:
                listen = ["--http-addr", http_addr]
            else:
                listen = ["--metrics-bind-address", http_addr, "--health-probe-bind-address", http_addr]
            argv = [
                *self.command,
                "--kubeconfig", str(kubeconfig),
                f"--leader-elect={'true' if leader_elect else 'false'}",
                "--lease-namespace", lease_namespace,
                "--lease-name", lease_name or self.lease_name,
                "--identity", identity,
                *listen,
                "--log-format", "json",
                *args,
            ]  # fmt: skip
            child_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **(env or {})}
            proc = ManagedProcess(argv, self.logdir / f"{identity}.log", env=child_env, cwd=REPO_ROOT)
            self._procs.append(_Controller(proc, identity, http_addr))
            started.append(i)
        return started

    def __len__(self) -> int:
        return len(self._procs)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` (SIGKILL by default; SIGSTOP/SIGCONT for a stale leader)."""
        self._procs[i].process.signal(sig)

    def stop(self, i: int, grace: float = 15.0) -> int | None:
        """SIGTERM (clean shutdown, releasing the Lease), SIGKILL after `grace`; returns the exit code."""
        proc = self._procs[i].process
        if proc.alive():
            proc.stop(grace=grace)
        return proc.popen.returncode

    def stop_all(self, grace: float = 15.0) -> None:
        for i in range(len(self._procs)):
            self.stop(i, grace=grace)

    def alive(self, i: int) -> bool:
        return self._procs[i].process.alive()

    def returncode(self, i: int) -> int | None:
        return self._procs[i].process.popen.poll()

    def pid(self, i: int) -> int:
        return self._procs[i].process.pid

    def identity(self, i: int) -> str:
        return self._procs[i].identity

    def http_addr(self, i: int) -> str:
        """host:port of the controller's /healthz, /readyz and /metrics (one listener serves all three)."""
        return self._procs[i].http_addr

    def log_path(self, i: int) -> Path:
        return self._procs[i].process.log_path

    def logs(self, i: int) -> str:
        """Everything process `i` wrote to stdout and stderr so far."""
        return self.log_path(i).read_text(errors="replace")

    def describe(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {c.identity} (pid {c.process.pid}, exit {c.process.popen.poll()}) last lines:\n"
            f"{tail(c.process.log_path, lines)}"
            for c in self._procs
        )
