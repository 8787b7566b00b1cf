"""Fixtures of the deploy tests: Debian's promtool and a throwaway Prometheus server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_tools import PrometheusServer, PromTools, find_tools

# the metric doubles and the docs-table parser are shared with tests/unit/metrics
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "metrics"))


@pytest.fixture(scope="session")
def prom_tools() -> PromTools:
    return find_tools()


@pytest.fixture(scope="session")
def prometheus_server(
    prom_tools: PromTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(prom_tools, Path(tmp_path_factory.mktemp("prometheus")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
