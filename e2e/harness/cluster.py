"""A real control plane as local processes: etcd + kube-apiserver on free loopback ports.

No kube-controller-manager runs: namespaces never finish deleting, ownerReferences are not followed and no
EndpointSlices appear. Tests use unique names instead of cleaning up.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.binaries import ControlPlaneBinaries, control_plane_binaries
from e2e.harness.processes import ManagedProcess, StartError, free_port, pids_mentioning, tail
from e2e.harness.rest import Api

log = logging.getLogger(__name__)

SERVICE_CIDR_V4 = "10.96.0.0/16"
SERVICE_CIDR_V6 = "fd00:10:96::/112"
APISERVER_GRACE = 5.0
START_ATTEMPTS = 3
READY_TIMEOUT = 90.0


def write_kubeconfig(path: Path, *, server: str, token: str, name: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int

    @classmethod
    def pick(cls) -> _Ports:
        return cls(free_port(), free_port(), free_port())


def _address_in_use(log_path: Path) -> bool:
    return "address already in use" in tail(log_path, 200)


class LocalCluster:
    """etcd + kube-apiserver owned by this object. Use `start()`; always `stop()`."""

    server: str
    token: str
    kubeconfig: Path
    etcd_url: str
    workdir: Path

    def __init__(
        self,
        *,
        binaries: ControlPlaneBinaries,
        workdir: Path,
        dual_stack: bool,
        watch_cache: bool,
        name: str,
        die_with_parent: bool,
    ) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.dual_stack = dual_stack
        self.watch_cache = watch_cache
        self.name = name
        self._die_with_parent = die_with_parent
        self.token = secrets.token_urlsafe(32)
        self._ports = _Ports.pick()
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._set_urls()

    def _set_urls(self) -> None:
        self.etcd_url = f"http://127.0.0.1:{self._ports.etcd_client}"
        self.server = f"https://127.0.0.1:{self._ports.apiserver}"
        self.kubeconfig = self.workdir / "kubeconfig"

    # ----------------------------------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        *,
        dual_stack: bool = True,
        watch_cache: bool = True,
        name: str = "test",
        workdir: Path | None = None,
        die_with_parent: bool = True,
        binaries: ControlPlaneBinaries | None = None,
    ) -> LocalCluster:
        """Blocks until /readyz answers 200 `ok`.

        `workdir` defaults to a fresh temporary directory (removed by stop()); `die_with_parent=False` lets
        the processes outlive this Python process (the `up` CLI).
        """
        # `binaries`: another kube-apiserver version (the version matrix); default: the pinned one.
        binaries = binaries or control_plane_binaries()
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"stablelb-{name}-"))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        cluster = cls(
            binaries=binaries,
            workdir=workdir,
            dual_stack=dual_stack,
            watch_cache=watch_cache,
            name=name,
            die_with_parent=die_with_parent,
        )
        try:
            cluster._prepare_files()
            cluster._start_with_retries()
        except BaseException:
            cluster.stop(check=False)
            raise
        return cluster

    def _prepare_files(self) -> None:
        (self.workdir / "certs").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        key, pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        for argv in (
            ["openssl", "genrsa", "-out", str(key), "2048"],
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        # A client CA, so tests can authenticate with client-certificate kubeconfigs.
        ca_key, ca_crt = self.workdir / "client-ca.key", self.workdir / "client-ca.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
             "-subj", "/CN=stablelb-test-client-ca"],
            check=True, capture_output=True,
        )  # fmt: skip

    def _start_with_retries(self) -> None:
        # Another run may grab one of our ports between free_port() and the bind; pick new ones and retry.
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_etcd()
                self._start_apiserver()
                break
            except StartError:
                logs = [self.workdir / "logs" / n for n in ("etcd.log", "kube-apiserver.log")]
                if attempt == START_ATTEMPTS or not any(_address_in_use(p) for p in logs):
                    raise
                log.warning("port collision starting %s, retrying with new ports", self.name)
                self._stop_processes()
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
                for p in logs:
                    p.unlink(missing_ok=True)
                self._ports = _Ports.pick()
                self._set_urls()
        write_kubeconfig(self.kubeconfig, server=self.server, token=self.token, name=f"stablelb-{self.name}")

    def _start_etcd(self) -> None:
        p = self._ports
        self._etcd = ManagedProcess(
            [
                str(self.binaries.etcd),
                "--name", "default",
                "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", self.etcd_url,
                "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{p.etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            self.workdir / "logs" / "etcd.log",
            die_with_parent=self._die_with_parent,
        )  # fmt: skip
        self._wait(self._etcd, "etcd", self._etcd_ready)

    def _apiserver_argv(self) -> list[str]:
        d = self.workdir
        cidr = f"{SERVICE_CIDR_V4},{SERVICE_CIDR_V6}" if self.dual_stack else SERVICE_CIDR_V4
        argv = [
            str(self.binaries.kube_apiserver),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            # The `kubernetes` Endpoints may not name a loopback address: 1.36 logged that every 10 s,
            # 1.37 refuses to start ("cannot use public IP 127.0.0.1 with endpoint reconciler").
            # Nothing here reaches the API server through that Service, so nothing reconciles it.
            "--endpoint-reconciler-type", "none",
            "--secure-port", str(self._ports.apiserver),
            "--cert-dir", str(d / "certs"),
            "--token-auth-file", str(d / "tokens.csv"),
            "--client-ca-file", str(d / "client-ca.crt"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(d / "sa.pub"),
            "--service-account-signing-key-file", str(d / "sa.key"),
            "--service-cluster-ip-range", cidr,
            "--disable-admission-plugins", "ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]  # fmt: skip
        if not self.watch_cache:
            # Watches on Services go straight to etcd, so a compacted resourceVersion yields a real 410.
            argv += ["--watch-cache-sizes", "services#0"]
        return argv

    def _start_apiserver(self) -> None:
        self._apiserver = ManagedProcess(
            self._apiserver_argv(),
            self.workdir / "logs" / "kube-apiserver.log",
            die_with_parent=self._die_with_parent,
        )
        self._wait(self._apiserver, "kube-apiserver", self._apiserver_ready)

    def _wait(self, proc: ManagedProcess, what: str, ready: Any) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StartError(
                    f"{what} exited with {proc.popen.returncode} during start; last lines of "
                    f"{proc.log_path}:\n{proc.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise StartError(
            f"{what} not ready after {READY_TIMEOUT:.0f}s; last lines of {proc.log_path}:\n{proc.log_tail()}"
        )

    def _etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        # A 500 answer also lists "[+]... ok" lines: only HTTP 200 with the exact body means ready.
        try:
            status, body = Api(self.server, self.token, timeout=2).request("GET", "/readyz")
        except OSError:
            return False
        return status == 200 and body.get("raw") == "ok"

    def _stop_processes(self) -> None:
        # kube-apiserver first: with etcd gone first it can hang in graceful shutdown forever.
        if self._apiserver is not None:
            self._apiserver.stop(grace=APISERVER_GRACE)
            self._apiserver = None
        if self._etcd is not None:
            self._etcd.stop(grace=5.0)
            self._etcd = None

    def stop(self, *, check: bool = True) -> None:
        """Stops both processes, removes the workdir and asserts nothing that used it is still running."""
        self._stop_processes()
        marker = str(self.workdir)
        strays = pids_mentioning(marker)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if check and strays:
            raise AssertionError(f"processes still running after stop() of {self.name}: {strays}")

    def restart_apiserver(self) -> None:
        """Stops kube-apiserver and starts it again on the same port against the same etcd."""
        if self._apiserver is not None:
            self._apiserver.stop(grace=APISERVER_GRACE)
        self._start_apiserver()

    def kill_apiserver(self) -> None:
        """Stops kube-apiserver and leaves it down until restart_apiserver()."""
        if self._apiserver is not None:
            self._apiserver.stop(grace=APISERVER_GRACE)
            self._apiserver = None

    @property
    def pids(self) -> dict[str, int]:
        return {
            name: proc.pid
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver))
            if proc is not None and proc.alive()
        }

    # ------------------------------------------------------------------------------------------- helpers

    @property
    def api(self) -> Api:
        """Admin (system:masters) client."""
        return Api(self.server, self.token)

    def compact_etcd(self) -> int:
        """Compacts etcd to its current revision (physically) and returns that revision."""
        revision = int(
            self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})["header"]["revision"]
        )
        self._etcd_post("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            decoded: dict[str, Any] = json.loads(resp.read())
            return decoded

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        expiration_seconds: int = 86400,
        bound_secret: dict[str, Any] | None = None,
    ) -> str:
        """A TokenRequest token; bound to a Secret (as returned by the API), deleting it revokes the token."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if bound_secret is not None:
            meta = bound_secret["metadata"]
            spec["boundObjectRef"] = {
                "kind": "Secret", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"],
            }
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        result = self.api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        token: str = result["status"]["token"]
        return token

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig authenticating as an existing ServiceAccount (TokenRequest token), RBAC enforced."""
        token = self.service_account_token(namespace, name)
        path = self.workdir / f"kubeconfig-sa-{namespace}-{name}"
        return write_kubeconfig(path, server=self.server, token=token, name=f"{namespace}-{name}")

    @property
    def serving_ca(self) -> Path:
        """The API server's self-signed serving certificate bundle (its CA included): verifies TLS to it."""
        return self.workdir / "certs" / "apiserver.crt"

    def client_certificate(self, user: str, groups: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for `user` in `groups` (O=), signed by the API server's client CA."""
        subject = f"/CN={user}" + "".join(f"/O={g}" for g in groups)
        with tempfile.TemporaryDirectory() as tmp:
            key, csr, crt = Path(tmp, "k.pem"), Path(tmp, "c.csr"), Path(tmp, "c.pem")
            for argv in (
                ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", subject],
                ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.workdir / "client-ca.crt"),
                 "-CAkey", str(self.workdir / "client-ca.key"), "-CAcreateserial", "-days", "1",
                 "-out", str(crt)],
            ):  # fmt: skip
                subprocess.run(argv, check=True, capture_output=True)
            return crt.read_bytes(), key.read_bytes()

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise FileNotFoundError("kubectl is not installed")
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            capture_output=True,
            text=True,
        )

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalCluster(name={self.name!r}, server={self.server!r}, dual_stack={self.dual_stack})"
