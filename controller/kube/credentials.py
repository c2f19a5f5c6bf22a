"""Where the Authorization header of each API request comes from, and when it is fetched again.

Tokens expire: projected ServiceAccount tokens are rotated by the kubelet, exec plugins (EKS, GKE, AKS,
kubelogin for OIDC) hand out tokens that live minutes to an hour. As in client-go:

- a token file (in-cluster, kubeconfig ``tokenFile``) is read again every minute;
- an exec plugin runs again once its ``expirationTimestamp`` has passed;
- and whenever the API server answers 401 to a header, the next request fetches a fresh one instead of
  sending the rejected token again (``invalidate``): without that, a process keeps a dead token forever.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

__all__ = [
    "Credentials",
    "CredentialsError",
    "ExecCredentials",
    "ExecSpec",
    "NoCredentials",
    "StaticCredentials",
    "TokenFileCredentials",
]

log = logging.getLogger(__name__)

# client-go re-reads token files this often (transport.NewCachedFileTokenSource).
TOKEN_FILE_REREAD = 60.0
# A plugin that hangs must not hang every request behind it.
EXEC_TIMEOUT = 60.0
# Refresh a little before the plugin's expiry, so a request does not leave with a token that dies in flight.
EXPIRY_MARGIN = 10.0
_EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class CredentialsError(aiohttp.ClientError):
    """Credentials could not be obtained; the message says what to fix.

    An aiohttp.ClientError, so a plugin failing mid-run takes the callers' transport-error path (backoff
    and retry, as for an unreachable API server) instead of ending an informer or the leader elector.
    """


class Credentials(Protocol):
    async def header(self) -> str | None:
        """The Authorization header value for the next request (None: send none)."""

    def invalidate(self, header: str) -> bool:
        """The API server rejected ``header`` (401): drop it. True when a retry may get a different one."""


class NoCredentials:
    """Client certificates only (or anonymous)."""

    async def header(self) -> str | None:
        return None

    def invalidate(self, header: str) -> bool:
        return False


@dataclass(frozen=True)
class StaticCredentials:
    """A fixed token or basic-auth header from the kubeconfig: nothing to refresh it from."""

    value: str

    async def header(self) -> str | None:
        return self.value

    def invalidate(self, header: str) -> bool:
        return False


class TokenFileCredentials:
    """A bearer token read from a file that someone else rotates (kubelet, a sidecar)."""

    def __init__(
        self, path: Path, *, reread: float = TOKEN_FILE_REREAD, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._reread = reread
        self._clock = clock
        self._value: str | None = None
        self._read_at = 0.0
        self._read()  # fail at start-up, with the path, rather than on the first request

    def _read(self) -> str:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            raise CredentialsError(f"cannot read the token file {self.path}: {exc}") from exc
        if not token:
            raise CredentialsError(f"the token file {self.path} is empty")
        self._value = f"Bearer {token}"
        self._read_at = self._clock()
        return self._value

    async def header(self) -> str | None:
        if self._value is None or self._clock() - self._read_at >= self._reread:
            try:
                return self._read()
            except CredentialsError:
                if self._value is None:
                    raise
                # Mid-rotation (file briefly missing): the previous token is still the best we have.
                log.warning("token file %s unreadable; keeping the previous token", self.path, exc_info=True)
                self._read_at = self._clock()
        return self._value

    def invalidate(self, header: str) -> bool:
        if header != self._value:
            return True  # already replaced since that request left
        self._value = None
        return True


@dataclass(frozen=True)
class ExecSpec:
    """The ``exec`` section of a kubeconfig user (client.authentication.k8s.io ExecConfig)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    # Passed as spec.cluster when provide_cluster_info is set.
    cluster: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kubeconfig(
        cls, section: Mapping[str, Any], *, base_dir: Path, cluster: Mapping[str, Any]
    ) -> ExecSpec:
        command = str(section.get("command") or "")
        if not command:
            raise CredentialsError("kubeconfig exec: 'command' is missing")
        # As in client-go: a relative command with a path separator is relative to the kubeconfig's folder;
        # a bare name is looked up in PATH.
        if os.sep in command and not os.path.isabs(command):
            command = str(base_dir / command)
        api_version = str(section.get("apiVersion") or "")
        if api_version not in _EXEC_API_VERSIONS:
            raise CredentialsError(
                f"kubeconfig exec: apiVersion {api_version!r} is not supported: use "
                f"{' or '.join(_EXEC_API_VERSIONS)}"
            )
        mode = str(section.get("interactiveMode") or ("IfAvailable" if api_version.endswith("beta1") else ""))
        if api_version.endswith("/v1") and not mode:
            raise CredentialsError("kubeconfig exec: interactiveMode is required with apiVersion v1")
        env_items = tuple((str(e["name"]), str(e.get("value", ""))) for e in section.get("env") or ())
        return cls(
            command=command,
            args=tuple(str(a) for a in section.get("args") or ()),
            env=env_items,
            api_version=api_version,
            install_hint=str(section.get("installHint") or ""),
            provide_cluster_info=bool(section.get("provideClusterInfo")),
            interactive_mode=mode,
            cluster=cluster,
        )


def _parse_rfc3339(text: str) -> float:
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


class ExecCredentials:
    """Tokens from an exec plugin, run again when the last one expires or is rejected."""

    def __init__(
        self,
        spec: ExecSpec,
        *,
        clock: Callable[[], float] = time.time,
        base_env: Mapping[str, str] | None = None,
        timeout: float = EXEC_TIMEOUT,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._base_env = base_env
        self._timeout = timeout
        self._value: str | None = None
        self._expires: float | None = None
        self._lock = asyncio.Lock()
        self.runs = 0  # how often the plugin ran (logged, and read by tests)

    def _fresh(self) -> bool:
        if self._value is None:
            return False
        return self._expires is None or self._clock() < self._expires - EXPIRY_MARGIN

    async def header(self) -> str | None:
        if self._fresh():
            return self._value
        async with self._lock:  # concurrent requests wait for one plugin run
            if not self._fresh():
                await self._run()
            return self._value

    def invalidate(self, header: str) -> bool:
        if header == self._value:
            self._value = None
            self._expires = None
        return True

    def _exec_info(self) -> str:
        spec: dict[str, Any] = {"interactive": False}
        if self.spec.provide_cluster_info:
            spec["cluster"] = dict(self.spec.cluster)
        return json.dumps({"apiVersion": self.spec.api_version, "kind": "ExecCredential", "spec": spec})

    async def _run(self) -> None:
        if self.spec.interactive_mode == "Always":
            raise CredentialsError(
                "kubeconfig exec: interactiveMode Always needs a terminal, which a controller never has"
            )
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update(self.spec.env)
        env["KUBERNETES_EXEC_INFO"] = self._exec_info()
        argv: Sequence[str] = (self.spec.command, *self.spec.args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            hint = f" {self.spec.install_hint}" if self.spec.install_hint else ""
            message = f"kubeconfig exec: cannot run {self.spec.command!r}: {exc}.{hint}"
            raise CredentialsError(message) from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CredentialsError(
                f"kubeconfig exec: {self.spec.command!r} did not answer within {self._timeout:.0f}s"
            ) from None
        self.runs += 1
        if proc.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-500:]
            raise CredentialsError(
                f"kubeconfig exec: {self.spec.command!r} exited with {proc.returncode}: {detail}"
            )
        self._value, self._expires = self._parse(stdout)
        log.info(
            "exec credential plugin ran",
            extra={"command": self.spec.command, "runs": self.runs, "expires": self._expires},
        )

    def _parse(self, stdout: bytes) -> tuple[str, float | None]:
        try:
            out = json.loads(stdout)
        except ValueError as exc:
            raise CredentialsError(f"kubeconfig exec: {self.spec.command!r} printed no JSON: {exc}") from exc
        if not isinstance(out, dict) or out.get("kind") != "ExecCredential":
            raise CredentialsError(f"kubeconfig exec: {self.spec.command!r} printed no ExecCredential")
        if out.get("apiVersion") != self.spec.api_version:
            raise CredentialsError(
                f"kubeconfig exec: {self.spec.command!r} answered apiVersion {out.get('apiVersion')!r}, "
                f"not the {self.spec.api_version!r} it was asked for"
            )
        status = out.get("status") or {}
        token = status.get("token")
        if not token:
            if status.get("clientCertificateData"):
                raise CredentialsError(
                    "kubeconfig exec: client certificates from exec plugins are not supported; "
                    "use a plugin that returns a token"
                )
            raise CredentialsError(f"kubeconfig exec: {self.spec.command!r} returned no token")
        expiry = status.get("expirationTimestamp")
        try:
            expires = _parse_rfc3339(str(expiry)) if expiry else None
        except ValueError as exc:
            raise CredentialsError(f"kubeconfig exec: bad expirationTimestamp {expiry!r}: {exc}") from exc
        return f"Bearer {token}", expires
