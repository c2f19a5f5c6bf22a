"""The harness itself: fault injection works and nothing is left running."""

from __future__ import annotations

import json
import signal
import ssl
import sys
import urllib.request
from pathlib import Path

import pytest

from e2e.harness import ControllerSet, LocalCluster, wait_for, wait_until
from e2e.harness.processes import pid_alive, pids_mentioning
from e2e.harness.rest import Api

pytestmark = pytest.mark.cluster

FAKE_CONTROLLER = [sys.executable, str(Path(__file__).with_name("fake_controller.py"))]


def _watch_first_event(cluster: LocalCluster, path: str, resource_version: str) -> dict[str, object]:
    url = f"{cluster.server}{path}?watch=1&resourceVersion={resource_version}&timeoutSeconds=5"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(req, timeout=10, context=ssl._create_unverified_context()) as resp:
        event: dict[str, object] = json.loads(resp.readline())
        return event


def test_compaction_gives_410_restart_keeps_data_and_stop_leaves_nothing() -> None:
    local = LocalCluster.start(watch_cache=False, name="faults")
    try:
        api = local.api
        path = "/api/v1/namespaces/default/services"
        svc = {"metadata": {"name": "first"}, "spec": {"ports": [{"port": 80}]}}
        old_rv = api.post(path, svc)["metadata"]["resourceVersion"]
        for name in ("second", "third"):
            api.post(path, {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}})

        revision = local.compact_etcd()
        assert revision > int(old_rv)
        event = _watch_first_event(local, path, old_rv)
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410  # type: ignore[index]

        old_pid = local.pids["kube-apiserver"]
        local.restart_apiserver()
        assert local.pids["kube-apiserver"] != old_pid
        assert not pid_alive(old_pid)
        names = {s["metadata"]["name"] for s in api.get(path)["items"]}
        assert {"first", "second", "third"} <= names
    finally:
        pids = dict(local.pids)
        local.stop()
    assert pids.keys() == {"etcd", "kube-apiserver"}
    assert not any(pid_alive(p) for p in pids.values())
    assert not local.workdir.exists()
    assert pids_mentioning(str(local.workdir)) == []


def test_service_account_kubeconfig_authenticates_as_the_service_account(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "probe"}})

    sa = Api.from_kubeconfig(cluster.service_account_kubeconfig(namespace, "probe"))
    review = sa.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:probe"
    status, _ = sa.request("GET", f"/api/v1/namespaces/{namespace}/services")
    assert status == 403


async def test_wait_for_returns_the_value_or_explains_the_timeout() -> None:
    calls = []

    async def eventually() -> int | None:
        calls.append(1)
        return 7 if len(calls) >= 3 else None

    assert await wait_for(eventually, timeout=5, interval=0.01) == 7
    with pytest.raises(AssertionError, match=r"never_true.*\n.*the objects"):

        def never_true() -> bool:
            return False

        await wait_for(never_true, timeout=0.05, interval=0.01, describe=lambda: "the objects")
    assert wait_until(lambda: "ok", timeout=1) == "ok"


def test_controller_set_runs_processes_with_flags_logs_and_signals(tmp_path: Path) -> None:
    group = ControllerSet(tmp_path, default_kubeconfig=tmp_path / "kubeconfig", command=FAKE_CONTROLLER)
    try:
        assert group(2, args=["--workers", "2"]) == [0, 1]
        for i in range(2):
            url = f"http://{group.http_addr(i)}/healthz"
            wait_until(lambda url=url: _get(url) == "ok", timeout=20, describe=group.describe)
            flags = json.loads(group.logs(i).splitlines()[0])
            assert flags["--identity"] == f"controller-{i}"
            assert flags["--lease-name"] == group.lease_name
            assert flags["--kubeconfig"] == str(tmp_path / "kubeconfig")
            assert flags["--workers"] == "2"
            assert flags["KUBECONFIG"] == str(tmp_path / "kubeconfig")
        group.kill(0, signal.SIGKILL)
        wait_until(lambda: not group.alive(0), timeout=10)
        assert group.returncode(0) == -signal.SIGKILL
        assert group.alive(1)
    finally:
        group.stop_all()
    assert group.returncode(1) == 0  # SIGTERM: a clean exit
    assert "stopping" in group.logs(1)
    assert pids_mentioning(str(FAKE_CONTROLLER[1])) == []


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def test_controllers_fixture_runs_as_the_controller_service_account(
    controllers: ControllerSet, controller_kubeconfig: Path
) -> None:
    controllers.command = FAKE_CONTROLLER  # the real `python -m controller` is exercised by e2e/
    [i] = controllers(1, env={"OTEL_SERVICE_NAME": "probe"})
    wait_until(lambda: controllers.logs(i).strip(), timeout=20, describe=controllers.describe)

    flags = json.loads(controllers.logs(i).splitlines()[0])
    assert flags["KUBECONFIG"] == flags["--kubeconfig"] == str(controller_kubeconfig)
    assert flags["--leader-elect"] == "true"
    assert flags["--lease-namespace"] == "kube-system"
    assert flags["--log-format"] == "json"

    whoami = Api.from_kubeconfig(controller_kubeconfig).post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:kube-system:stablelb-controller"
