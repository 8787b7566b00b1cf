"""Run reports: the data a demo observed (`ReportData`), the figures defined on it, and the HTML page.

* `ReportData` (`dscore.report.model`): completions, faults, who led when, the checker's result; filled
  by `dscore demo` (embedded) and by any other stack that runs the same scenario.
* `RoleTracker`: builds the who-led-when spans from successive observations of the nodes' roles.
* `summarize`, `window_series`, `availability_windows`, `failover_time`, `percentile`
  (`dscore.report.figures`): the figures' one definition.
* `render_html(data) -> str` / `write_report(data, path)`: one self-contained HTML page with inline SVG
  charts, deterministic for a given `ReportData`.
"""

from dscore.report.figures import (
    WINDOW_S,
    Summary,
    Window,
    availability_windows,
    failover_time,
    percentile,
    summarize,
    window_series,
)
from dscore.report.model import FailoverTime, FaultEvent, ReportData, RoleSpan
from dscore.report.page import render_html, write_report
from dscore.report.roles import RoleTracker

__all__ = [
    "WINDOW_S",
    "FailoverTime",
    "FaultEvent",
    "ReportData",
    "RoleSpan",
    "RoleTracker",
    "Summary",
    "Window",
    "availability_windows",
    "failover_time",
    "percentile",
    "render_html",
    "summarize",
    "window_series",
    "write_report",
]
