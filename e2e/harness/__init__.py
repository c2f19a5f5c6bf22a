"""Local Kubernetes control plane, Jaeger and controller processes for tests, benchmarks and people.

`python -m e2e.harness up|down|status` manages a long-lived cluster under .stablelb/ (make cluster-up).
"""

from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.jaeger import Jaeger, JaegerQuery
from e2e.harness.rest import Api, ApiError
from e2e.harness.waiting import wait_for, wait_until

__all__ = [
    "Api",
    "ApiError",
    "ControllerSet",
    "Jaeger",
    "JaegerQuery",
    "LocalCluster",
    "wait_for",
    "wait_until",
]
