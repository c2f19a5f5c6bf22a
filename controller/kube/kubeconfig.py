"""Reading a kubeconfig file or the in-cluster ServiceAccount into what a connection needs.

Certificates and keys are kept in memory: kubernetes_asyncio's own loader writes ``*-data`` fields to files in
the temp folder, which a container with a read-only root filesystem does not have (see tls.py for how they
reach the SSL context without touching the filesystem).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.kube.credentials import (
    Credentials,
    CredentialsError,
    ExecCredentials,
    ExecSpec,
    NoCredentials,
    StaticCredentials,
    TokenFileCredentials,
)

__all__ = [
    "IN_CLUSTER_ROOT_ENV",
    "SERVICEACCOUNT_DIR",
    "Connection",
    "KubeconfigError",
    "in_cluster",
    "load_kubeconfig",
]

SERVICEACCOUNT_DIR = "var/run/secrets/kubernetes.io/serviceaccount"
# Tests run the real process "in a cluster" with the ServiceAccount files under a temporary root.
IN_CLUSTER_ROOT_ENV = "STABLELB_IN_CLUSTER_ROOT"


class KubeconfigError(CredentialsError):
    """The kubeconfig or the in-cluster environment is unusable; the message says what to fix."""


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to prove who we are."""

    server: str
    credentials: Credentials = field(default_factory=NoCredentials)
    ca_pem: bytes | None = None  # None: the system's trust store
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None  # the cluster's proxy-url; None: from the environment


def _named(items: Any, name: str, what: str) -> dict[str, Any]:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, dict) else {}
    raise KubeconfigError(f"kubeconfig: no {what} named {name!r}")


def _file_or_data(section: Mapping[str, Any], key: str, base_dir: Path, label: str) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError as exc:
            raise KubeconfigError(f"kubeconfig: {label} {key}-data is not valid base64: {exc}") from exc
    path = section.get(key)
    if not path:
        return None
    full = Path(os.path.expanduser(str(path)))
    if not full.is_absolute():
        full = base_dir / full  # relative paths are relative to the kubeconfig file, as in client-go
    try:
        return full.read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig: cannot read {label} {key} {str(full)!r}: {exc}") from exc


def _credentials(user: Mapping[str, Any], base_dir: Path, cluster: Mapping[str, Any]) -> Credentials:
    if "auth-provider" in user:
        name = (user.get("auth-provider") or {}).get("name", "?")
        raise KubeconfigError(
            f"kubeconfig: the {name!r} auth-provider was removed from Kubernetes clients in 1.26; use its "
            "exec plugin instead (kubelogin for OIDC, gke-gcloud-auth-plugin, kubelogin for Azure)"
        )
    if user.get("exec"):
        return ExecCredentials(ExecSpec.from_kubeconfig(user["exec"], base_dir=base_dir, cluster=cluster))
    if user.get("token"):
        return StaticCredentials(f"Bearer {user['token']}")
    if user.get("tokenFile"):
        path = Path(os.path.expanduser(str(user["tokenFile"])))
        return TokenFileCredentials(path if path.is_absolute() else base_dir / path)
    if user.get("username") is not None and user.get("password") is not None:
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        return StaticCredentials(f"Basic {basic}")
    return NoCredentials()


def _exec_cluster_info(cluster: Mapping[str, Any], ca: bytes | None) -> dict[str, Any]:
    """spec.cluster of the ExecCredential handed to a plugin with provideClusterInfo."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url"):
        if key in cluster:
            info[key] = cluster[key]
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    # Per-cluster plugin configuration lives in this named extension (client-go's convention).
    for ext in cluster.get("extensions") or ():
        if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return info


def load_kubeconfig(path: str | Path, *, context: str | None = None) -> Connection:
    """The current (or named) context of one kubeconfig file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read kubeconfig {str(path)!r}: {exc}") from exc
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {str(path)!r} is not a mapping")
    base_dir = path.resolve().parent
    name = context or config.get("current-context")
    if not name:
        raise KubeconfigError(f"kubeconfig {str(path)!r} has no current-context")
    ctx = _named(config.get("contexts"), str(name), "context")
    cluster = _named(config.get("clusters"), str(ctx.get("cluster", "")), "cluster")
    user = _named(config.get("users"), str(ctx["user"]), "user") if ctx.get("user") else {}
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeconfigError(f"kubeconfig {str(path)!r}: cluster {ctx.get('cluster')!r} has no server")
    ca = _file_or_data(cluster, "certificate-authority", base_dir, "cluster")
    cert = _file_or_data(user, "client-certificate", base_dir, "user")
    key = _file_or_data(user, "client-key", base_dir, "user")
    if (cert is None) != (key is None):
        raise KubeconfigError("kubeconfig: a client certificate needs its key and the other way round")
    return Connection(
        server=server,
        credentials=_credentials(user, base_dir, _exec_cluster_info(cluster, ca)),
        ca_pem=ca,
        client_cert_pem=cert,
        client_key_pem=key,
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        proxy_url=str(cluster["proxy-url"]) if cluster.get("proxy-url") else None,
    )


def in_cluster(env: Mapping[str, str] | None = None, *, root: Path | None = None) -> Connection:
    """The Pod's ServiceAccount: KUBERNETES_SERVICE_HOST/PORT, token and CA under
    /var/run/secrets/kubernetes.io/serviceaccount (below ``root``: default $STABLELB_IN_CLUSTER_ROOT or /).

    The token is read again every minute and after a 401, so the kubelet's rotation is picked up.
    """
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        raise KubeconfigError(
            "not running in a cluster (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)"
        )
    if root is None:
        root = Path(env.get(IN_CLUSTER_ROOT_ENV) or "/")
    sa_dir = root / SERVICEACCOUNT_DIR
    try:
        ca = (sa_dir / "ca.crt").read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"in-cluster: cannot read the CA bundle: {exc}") from exc
    if not ca.strip():
        raise KubeconfigError(f"in-cluster: the CA bundle {sa_dir / 'ca.crt'} is empty")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Connection(
        server=f"https://{hostport}", credentials=TokenFileCredentials(sa_dir / "token"), ca_pem=ca
    )
