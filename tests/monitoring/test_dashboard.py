"""The Grafana dashboard is valid JSON whose every query reads metrics the controller exports."""

from __future__ import annotations

import json
from typing import Any

from tests.monitoring.conftest import FILES
from tests.monitoring.exported import exported_series, referenced_metrics

DASHBOARD = FILES / "dashboard.json"


def panels() -> list[dict[str, Any]]:
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboard_shape() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "stablelb-controller"
    assert board["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_reads_exported_metrics() -> None:
    exported = exported_series()
    seen: set[str] = set()
    for panel in panels():
        for target in panel.get("targets", []):
            names = referenced_metrics(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            missing = names - exported
            assert not missing, f"{panel['title']}: {sorted(missing)} not exported"
            seen |= names
    # The headline metrics each have a panel.
    for name in ("stablelb_leader", "stablelb_services_pending", "stablelb_pool_addresses",
                 "stablelb_api_requests_total", "stablelb_watch_restarts_total", "process_cpu_seconds_total"):
        assert name in seen, name


def test_the_metric_name_extraction_is_not_vacuous() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(x_bucket{job=~"$job", a="b(c)"}[$__rate_interval])))'
    assert referenced_metrics(expr) == {"x_bucket"}
    assert referenced_metrics("(sum(up) or vector(0)) < 1 and on (pool) foo > 0.5") == {"up", "foo"}
    assert "nonexistent_metric" not in exported_series()
