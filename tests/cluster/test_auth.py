"""Credentials against the real API server: tokens that expire or are revoked are replaced, client
certificates need no temp files, and the in-cluster ServiceAccount token is re-read when rotated.

Revocation is real: tokens are bound to a Secret (TokenRequest boundObjectRef) and deleting the Secret makes
the API server answer 401 to them.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kube.client import ApiError as ClientApiError
from controller.kube.client import KubeClient
from e2e.harness import ControllerSet, LocalCluster
from e2e.harness.rest import Api, ApiError
from e2e.support import Scenario

pytestmark = pytest.mark.cluster

SA_NAMESPACE = "kube-system"
SA_NAME = "stablelb-controller"
PLUGIN = Path(__file__).with_name("exec_token_plugin.py")
# `python -m controller` minus the --kubeconfig flag the harness always passes: the in-cluster path.
IN_CLUSTER_MAIN = (
    "import sys; a = sys.argv[1:]; i = a.index('--kubeconfig'); del a[i:i + 2]; "
    "from controller.__main__ import main; main(a)"
)
# Runs the rest of its arguments in a private mount namespace where every filesystem is read-only, as in a
# container with readOnlyRootFilesystem (the log file is already open; /proc, /sys, /dev stay as they are).
READ_ONLY_ROOT = (
    "for m in $(awk '$4 ~ /^rw/ && $2 !~ \"^/(proc|sys|dev)\" {print $2}' /proc/self/mounts); do "
    'mount -o remount,bind,ro "$m" || exit 96; done; '
    "if touch /tmp/.stablelb-read-only-probe 2>/dev/null; then echo still writable >&2; exit 97; fi; "
    'exec "$@"'
)


def read_only_root_command() -> tuple[str, ...]:
    """`python -m controller` on a read-only root filesystem (needs mount namespaces: root, CAP_SYS_ADMIN)."""
    argv = ("unshare", "-m", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "read-only-root")
    probe = subprocess.run([*argv, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount namespace here: {probe.stderr.strip()[:200]}")
    return (*argv, sys.executable, "-m", "controller")


def kubeconfig(path: Path, cluster: LocalCluster, user: dict[str, Any]) -> Path:
    ca = base64.b64encode(cluster.serving_ca.read_bytes()).decode()
    server = {"server": cluster.server, "certificate-authority-data": ca}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path


class Plugin:
    """The exec plugin's kubeconfig and what it has issued so far."""

    def __init__(self, cluster: LocalCluster, tmp_path: Path, *, expires_in: float | None = None) -> None:
        self.cluster = cluster
        self.log = tmp_path / "plugin.log"
        admin = tmp_path / "admin-token"
        admin.write_text(cluster.token)
        env = {
            "PLUGIN_SERVER": cluster.server,
            "PLUGIN_ADMIN_TOKEN_FILE": str(admin),
            "PLUGIN_NAMESPACE": SA_NAMESPACE,
            "PLUGIN_SERVICE_ACCOUNT": SA_NAME,
            "PLUGIN_LOG": str(self.log),
        }
        if expires_in is not None:
            env["PLUGIN_EXPIRES_IN"] = str(expires_in)
        exec_section = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(PLUGIN)],
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "interactiveMode": "Never",
        }
        self.kubeconfig = kubeconfig(tmp_path / "exec-kubeconfig", cluster, {"exec": exec_section})

    def issued(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.split(" ", 1)) for line in self.log.read_text().splitlines()]  # type: ignore[misc]

    def revoke_all(self) -> list[str]:
        """Delete the Secrets every issued token is bound to; returns the revoked tokens."""
        tokens = []
        for secret, token in self.issued():
            try:
                self.cluster.api.delete(f"/api/v1/namespaces/{SA_NAMESPACE}/secrets/{secret}")
            except ApiError as err:
                if err.status != 404:
                    raise
            tokens.append(token)
        return tokens


def rejected(cluster: LocalCluster, token: str) -> bool:
    # The API server caches successful token reviews for a few seconds: revocation is not instant.
    status, _ = Api(cluster.server, token).request("GET", "/api")
    return status == 401


def new_secret(cluster: LocalCluster) -> dict[str, Any]:
    return cluster.api.post(
        f"/api/v1/namespaces/{SA_NAMESPACE}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"generateName": "auth-test-"}},
    )


async def test_revoked_exec_token_is_replaced_not_retried_into_a_401_loop(
    stablelb_installed: LocalCluster, namespace: str, tmp_path: Path, wait_for: Any
) -> None:
    cluster = stablelb_installed
    plugin = Plugin(cluster, tmp_path)
    group = ControllerSet(tmp_path / "controllers")
    sc = Scenario(cluster.api, namespace, group)
    try:
        sc.create_pool("p", ["198.51.100.0/28"])
        sc.start(1, kubeconfig=plugin.kubeconfig)
        sc.create_service("before")
        await wait_for(lambda: sc.ips("before"), timeout=60, describe=lambda: sc.describe("before"))
        assert len(plugin.issued()) == 1

        revoked = plugin.revoke_all()
        await wait_for(lambda: all(rejected(cluster, t) for t in revoked), timeout=60)
        sc.create_service("after")
        await wait_for(lambda: sc.ips("after"), timeout=60, describe=lambda: sc.describe("after"))
        # The leader renewed its Lease through the revocation: no restart, no lost leadership.
        assert group.alive(0), group.describe()
        assert len(plugin.issued()) >= 2
        assert "retrying with a fresh one" in group.logs(0)
        # One new token per rejection, not a plugin run per request.
        assert len(plugin.issued()) <= 4, plugin.issued()
    finally:
        group.stop_all()
        sc.cleanup()


async def test_exec_token_is_fetched_again_when_its_expiration_timestamp_passes(
    stablelb_installed: LocalCluster, tmp_path: Path
) -> None:
    # The plugin claims its tokens expire 12 s after issue; refreshing starts 10 s before expiry.
    plugin = Plugin(stablelb_installed, tmp_path, expires_in=12)
    codes: list[str] = []

    class Recorder:
        def api_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
            codes.append(code)

    client = await KubeClient.from_kubeconfig(str(plugin.kubeconfig), metrics=Recorder())
    try:
        await client.request("GET", "/api/v1/services", query={"limit": 1})
        first = plugin.issued()
        assert len(first) == 1
        await asyncio.sleep(3)
        await client.request("GET", "/api/v1/services", query={"limit": 1})
        assert len(plugin.issued()) == 2  # fetched before use, not after a rejection
        assert codes == ["200", "200"]
    finally:
        await client.close()


def client_cert_kubeconfig(cluster: LocalCluster, tmp_path: Path, user: str, groups: tuple[str, ...]) -> Path:
    cert, key = cluster.client_certificate(user, groups)
    return kubeconfig(
        tmp_path / "cert-kubeconfig",
        cluster,
        {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        },
    )


async def test_client_certificate_kubeconfig_writes_no_temp_files(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = client_cert_kubeconfig(cluster, tmp_path, "cert-user", ("system:masters",))

    def refuse(*args: object, **kwargs: object) -> Any:
        raise OSError(30, "Read-only file system (temp files are refused in this test)")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        review = await client.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["username"] == "cert-user"
        assert "system:masters" in review["status"]["userInfo"]["groups"]
    finally:
        await client.close()


async def test_controller_runs_with_a_client_certificate_on_a_read_only_root_filesystem(
    stablelb_installed: LocalCluster, namespace: str, tmp_path: Path, wait_for: Any
) -> None:
    cluster = stablelb_installed
    path = client_cert_kubeconfig(cluster, tmp_path, "cert-controller", ("system:masters",))
    group = ControllerSet(tmp_path / "controllers", command=read_only_root_command())
    sc = Scenario(cluster.api, namespace, group)
    try:
        sc.create_pool("p", ["198.51.100.16/28"])
        sc.start(1, kubeconfig=path)
        sc.create_service("a")
        await wait_for(lambda: sc.ips("a"), timeout=60, describe=lambda: sc.describe("a"))
        assert group.alive(0), group.describe()
    finally:
        group.stop_all()
        sc.cleanup()


async def test_in_cluster_config_picks_up_a_rotated_token(
    stablelb_installed: LocalCluster, namespace: str, tmp_path: Path, wait_for: Any
) -> None:
    cluster = stablelb_installed
    root = tmp_path / "root"
    sa_dir = root / "var/run/secrets/kubernetes.io/serviceaccount"
    sa_dir.mkdir(parents=True)
    (sa_dir / "ca.crt").write_bytes(cluster.serving_ca.read_bytes())
    (sa_dir / "namespace").write_text(SA_NAMESPACE)
    first_secret = new_secret(cluster)
    first = cluster.service_account_token(
        SA_NAMESPACE, SA_NAME, expiration_seconds=600, bound_secret=first_secret
    )
    write_atomically(sa_dir / "token", first)

    port = cluster.server.rsplit(":", 1)[1]
    group = ControllerSet(tmp_path / "controllers", command=(sys.executable, "-c", IN_CLUSTER_MAIN))
    sc = Scenario(cluster.api, namespace, group)
    env = {
        "KUBECONFIG": "",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "STABLELB_IN_CLUSTER_ROOT": str(root),
    }
    try:
        sc.create_pool("p", ["198.51.100.32/28"])
        sc.start(1, kubeconfig=tmp_path / "unused", env=env)
        sc.create_service("before")
        await wait_for(lambda: sc.ips("before"), timeout=60, describe=lambda: sc.describe("before"))

        # The kubelet rotates the projected token; the old one stops working.
        second = cluster.service_account_token(
            SA_NAMESPACE, SA_NAME, expiration_seconds=600, bound_secret=new_secret(cluster)
        )
        write_atomically(sa_dir / "token", second)
        cluster.api.delete(f"/api/v1/namespaces/{SA_NAMESPACE}/secrets/{first_secret['metadata']['name']}")
        await wait_for(lambda: rejected(cluster, first), timeout=60)

        sc.create_service("after")
        await wait_for(lambda: sc.ips("after"), timeout=60, describe=lambda: sc.describe("after"))
        assert group.alive(0), group.describe()
    finally:
        group.stop_all()
        sc.cleanup()


def write_atomically(path: Path, text: str) -> None:
    # As the kubelet's atomic writer: readers see the old file or the new one, never a half-written one.
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


async def test_a_static_token_that_is_rejected_is_not_retried(cluster: LocalCluster) -> None:
    client = KubeClient.for_host(cluster.server, token="not-a-valid-token", verify_ssl=False)
    try:
        with pytest.raises(ClientApiError) as err:
            await client.request("GET", "/api/v1/namespaces")
        assert err.value.status == 401
    finally:
        await client.close()
