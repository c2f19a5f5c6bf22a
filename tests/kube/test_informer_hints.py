"""A list/watch that retrying cannot fix says what the operator should do (real API server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from controller.kube.client import KubeClient
from controller.kube.informer import Informer
from controller.kube.resources import Resource

pytestmark = pytest.mark.cluster

MISSING = Resource("widgets.example.com", "v1", "widgets", "Widget", namespaced=False)


async def test_missing_resource_names_the_crd_to_install(
    cluster: Any, caplog: pytest.LogCaptureFixture, wait_for: Any
) -> None:
    client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    informer = Informer(client, MISSING)
    task = asyncio.create_task(informer.run())
    try:
        with caplog.at_level(logging.WARNING, logger="controller.kube.informer"):
            await wait_for(lambda: "CustomResourceDefinition" in caplog.text, timeout=30)
        assert "widgets.example.com/v1 widgets" in caplog.text
        assert not informer.has_synced()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
