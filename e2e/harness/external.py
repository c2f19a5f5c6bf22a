"""A cluster the harness did not start (kind, in `make e2e`): reached through $KUBECONFIG only."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from e2e.harness.cluster import write_kubeconfig
from e2e.harness.rest import Api


class NotSupportedOnExternalCluster(RuntimeError):
    pass


class ExternalCluster:
    """Offers the LocalCluster attributes that make sense for someone else's cluster.

    Fault injection (restart_apiserver, compact_etcd) needs the processes, so it raises here.
    """

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = Api.from_kubeconfig(kubeconfig)
        self.server = self.api.server
        self.token = self.api.token or ""
        self.etcd_url = ""
        self.workdir = Path(tempfile.mkdtemp(prefix="stablelb-external-"))
        self.name = "external"
        self.dual_stack = True

    @classmethod
    def from_environment(cls) -> ExternalCluster:
        path = os.environ.get("KUBECONFIG")
        if not path:
            raise RuntimeError("STABLELB_E2E_EXTERNAL=1 needs KUBECONFIG to point at the cluster")
        return cls(Path(path.split(os.pathsep)[0]))

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        }
        token = self.api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        config = yaml.safe_load(self.kubeconfig.read_text())
        path = self.workdir / f"kubeconfig-sa-{namespace}-{name}"
        write_kubeconfig(path, server=self.server, token=token["status"]["token"], name=f"{namespace}-{name}")
        # Keep the cluster's CA instead of skipping verification when the source kubeconfig has one.
        cluster = config["clusters"][0]["cluster"]
        if "certificate-authority-data" in cluster:
            written = yaml.safe_load(path.read_text())
            written["clusters"][0]["cluster"] = {
                "server": self.server,
                "certificate-authority-data": cluster["certificate-authority-data"],
            }
            path.write_text(yaml.safe_dump(written, sort_keys=False))
        return path

    def restart_apiserver(self) -> None:
        raise NotSupportedOnExternalCluster("restart_apiserver needs the local control plane")

    def compact_etcd(self) -> int:
        raise NotSupportedOnExternalCluster("compact_etcd needs the local control plane")

    def stop(self) -> None:
        """The cluster belongs to someone else: only our temporary files go."""
        shutil.rmtree(self.workdir, ignore_errors=True)
