"""Credential sources without an API server: when a token is fetched again, and what a plugin is told."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from controller.kube.client import KubeClient, request_labels
from controller.kube.credentials import (
    CredentialsError,
    ExecCredentials,
    ExecSpec,
    StaticCredentials,
    TokenFileCredentials,
)
from controller.kube.kubeconfig import Connection, KubeconfigError, in_cluster, load_kubeconfig

# A plugin that answers token-<n> on its n-th run, valid until $EXPIRY, and records what it was told.
PLUGIN = """\
import json, os, pathlib, sys
state = pathlib.Path(sys.argv[1])
n = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(n))
pathlib.Path(sys.argv[1] + ".info").write_text(os.environ.get("KUBERNETES_EXEC_INFO", ""))
status = {"token": f"token-{n}"}
if os.environ.get("EXPIRY"):
    status["expirationTimestamp"] = os.environ["EXPIRY"]
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}))
"""


def plugin_spec(tmp_path: Path, *, expiry: str = "", cluster: dict[str, Any] | None = None) -> ExecSpec:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    return ExecSpec(
        command=sys.executable,
        args=(str(script), str(tmp_path / "runs")),
        env=(("EXPIRY", expiry),),
        interactive_mode="Never",
        provide_cluster_info=cluster is not None,
        cluster=cluster or {},
    )


async def test_exec_token_is_cached_until_expiry_then_fetched_again(tmp_path: Path) -> None:
    now = [1_800_000_000.0]  # 2027-01-15T08:00:00Z
    creds = ExecCredentials(plugin_spec(tmp_path, expiry="2027-01-15T08:10:00Z"), clock=lambda: now[0])
    assert await creds.header() == "Bearer token-1"
    assert await creds.header() == "Bearer token-1"
    now[0] += 9 * 60
    assert await creds.header() == "Bearer token-1"
    now[0] += 60  # at expiry (less the margin) the plugin runs again
    assert await creds.header() == "Bearer token-2"
    assert creds.runs == 2


async def test_exec_token_without_expiry_is_kept_until_the_server_rejects_it(tmp_path: Path) -> None:
    creds = ExecCredentials(plugin_spec(tmp_path))
    first = await creds.header()
    assert first == "Bearer token-1"
    assert await creds.header() == first
    assert creds.invalidate(first)
    assert await creds.header() == "Bearer token-2"
    # A 401 for a header already replaced does not throw away the new one.
    creds.invalidate(first)
    assert await creds.header() == "Bearer token-2"
    assert creds.runs == 2


async def test_exec_plugin_is_told_it_is_not_interactive_and_the_cluster(tmp_path: Path) -> None:
    creds = ExecCredentials(plugin_spec(tmp_path, cluster={"server": "https://10.0.0.1:6443"}))
    await creds.header()
    info = json.loads((tmp_path / "runs.info").read_text())
    assert info == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {"interactive": False, "cluster": {"server": "https://10.0.0.1:6443"}},
    }


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("import sys; sys.stderr.write('login required'); sys.exit(3)", "exited with 3: login required"),
        ("print('hello')", "printed no JSON"),
        ("print('{\"kind\": \"ExecCredential\", \"apiVersion\": \"client.authentication.k8s.io/v1beta1\"}')",
         "answered apiVersion 'client.authentication.k8s.io/v1beta1'"),
        ("print('{\"kind\": \"ExecCredential\", \"apiVersion\": \"client.authentication.k8s.io/v1\", "
         "\"status\": {}}')", "returned no token"),
    ],
)
async def test_exec_plugin_failures_say_what_went_wrong(tmp_path: Path, script: str, message: str) -> None:
    spec = ExecSpec(command=sys.executable, args=("-c", script), interactive_mode="Never")
    with pytest.raises(CredentialsError, match=message):
        await ExecCredentials(spec).header()


async def test_missing_exec_command_names_the_install_hint() -> None:
    spec = ExecSpec(command="/nonexistent/kubelogin", interactive_mode="Never", install_hint="brew install x")
    with pytest.raises(CredentialsError, match=r"cannot run '/nonexistent/kubelogin'.*brew install x"):
        await ExecCredentials(spec).header()


async def test_token_file_is_reread_every_minute_and_after_a_401(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    now = [0.0]
    creds = TokenFileCredentials(path, clock=lambda: now[0])
    assert await creds.header() == "Bearer one"
    path.write_text("two")
    now[0] = 30.0
    assert await creds.header() == "Bearer one"
    now[0] = 60.0
    assert await creds.header() == "Bearer two"
    path.write_text("three")
    assert creds.invalidate("Bearer two")
    assert await creds.header() == "Bearer three"


async def test_static_token_is_never_refreshed() -> None:
    creds = StaticCredentials("Bearer x")
    assert not creds.invalidate("Bearer x")
    assert await creds.header() == "Bearer x"


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_kubeconfig_data_fields_stay_in_memory_and_files_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    kc = write_kubeconfig(
        tmp_path / "kc",
        {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt", "proxy-url": "http://p:1"},
        {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode(),
        },
    )
    conn = load_kubeconfig(kc)
    assert (conn.server, conn.ca_pem, conn.client_cert_pem, conn.client_key_pem) == (
        "https://10.0.0.1:6443",
        b"CA",
        b"CERT",
        b"KEY",
    )
    assert conn.proxy_url == "http://p:1"


def test_kubeconfig_exec_command_relative_to_its_folder(tmp_path: Path) -> None:
    kc = write_kubeconfig(
        tmp_path / "kc",
        {"server": "https://10.0.0.1:6443"},
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/plugin",
                  "interactiveMode": "Never", "args": ["a"], "env": [{"name": "K", "value": "V"}]}},
    )
    creds = load_kubeconfig(kc).credentials
    assert isinstance(creds, ExecCredentials)
    assert creds.spec.command == str(tmp_path / "./bin/plugin")
    assert (creds.spec.args, creds.spec.env) == (("a",), (("K", "V"),))


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"auth-provider": {"name": "oidc"}}, "'oidc' auth-provider was removed"),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}, "not supported"),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}, "interactiveMode"),
        ({"client-certificate-data": base64.b64encode(b"C").decode()}, "needs its key"),
    ],
)
def test_unusable_kubeconfig_users(tmp_path: Path, user: dict[str, Any], message: str) -> None:
    kc = write_kubeconfig(tmp_path / "kc", {"server": "https://10.0.0.1:6443"}, user)
    with pytest.raises(CredentialsError, match=message):
        load_kubeconfig(kc)


def test_in_cluster_layout_under_an_injected_root(tmp_path: Path) -> None:
    sa = tmp_path / "var/run/secrets/kubernetes.io/serviceaccount"
    sa.mkdir(parents=True)
    (sa / "token").write_text("tok")
    (sa / "ca.crt").write_bytes(b"CA")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = in_cluster(env, root=tmp_path)
    assert conn.server == "https://[fd00::1]:443"
    assert conn.ca_pem == b"CA"
    assert isinstance(conn.credentials, TokenFileCredentials)
    with pytest.raises(KubeconfigError, match="not running in a cluster"):
        in_cluster({}, root=tmp_path)
    (sa / "ca.crt").unlink()
    with pytest.raises(KubeconfigError, match="cannot read the CA bundle"):
        in_cluster(env, root=tmp_path)


@pytest.mark.parametrize(
    ("method", "path", "query", "watch", "labels"),
    [
        ("GET", "/api/v1/services", None, False, ("list", "services")),
        ("GET", "/api/v1/services", {"watch": "true"}, False, ("watch", "services")),
        ("GET", "/api/v1/services", None, True, ("watch", "services")),
        ("GET", "/api/v1/namespaces/a/services/b", None, False, ("get", "services")),
        ("PUT", "/api/v1/namespaces/a/services/b/status", None, False, ("update", "services/status")),
        ("PATCH", "/api/v1/namespaces/a/services/b/status", None, False, ("patch", "services/status")),
        ("POST", "/api/v1/namespaces/a/events", None, False, ("create", "events")),
        ("GET", "/api/v1/namespaces", None, False, ("list", "namespaces")),
        ("GET", "/api/v1/namespaces/a", None, False, ("get", "namespaces")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/k/leases/l", None, False, ("update", "leases")),
        ("PUT", "/apis/stablelb.io/v1alpha1/ippools/p/status", None, False, ("update", "ippools/status")),
        ("DELETE", "/api/v1/namespaces/a/services", None, False, ("deletecollection", "services")),
        ("GET", "/readyz", None, False, ("get", "<nonresource>")),
    ],
)
def test_request_labels(
    method: str, path: str, query: dict[str, str] | None, watch: bool, labels: tuple[str, str]
) -> None:
    assert request_labels(method, path, query, watch=watch) == labels


async def test_a_failing_plugin_surfaces_as_a_transport_error_callers_retry() -> None:
    # Informers and the leader elector back off and retry on aiohttp.ClientError; they must not die here.
    spec = ExecSpec(command=sys.executable, args=("-c", "import sys; sys.exit(1)"), interactive_mode="Never")
    client = KubeClient.from_connection(Connection("https://127.0.0.1:1", credentials=ExecCredentials(spec)))
    try:
        with pytest.raises(aiohttp.ClientError, match="exited with 1"):
            await client.request("GET", "/api/v1/services")
    finally:
        await client.close()
