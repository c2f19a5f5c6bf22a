from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness.controllers import ControllerSet
from e2e.support import Scenario


@pytest.fixture
def scenario(cluster: Any, namespace: str, controllers: ControllerSet) -> Iterator[Scenario]:
    s = Scenario(cluster.api, namespace, controllers)
    yield s
    controllers.stop_all()
    s.cleanup()
