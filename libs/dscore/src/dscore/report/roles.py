"""`RoleTracker`: who led when, built from successive observations of the nodes' roles.

A demo calls `observe(t_s, {node: (role, term)})` whenever it looks at the cluster (on every change of a
node's role or leader, and at least once a tick), then `finish(end_s)`. The tracker keeps one open span
per node and closes it when the node's role or term changes, so the spans are exact to the observation
times and cost nothing while nothing changes. It knows nothing of where the roles come from (an
`EmbeddedCluster`'s runtimes, or the status of node processes).
"""

from __future__ import annotations

from collections.abc import Mapping

from dscore.core.errors import LocalError
from dscore.core.ids import NodeId
from dscore.report.model import RoleSpan

#: spans kept (a run that flaps more than this keeps its first ones; the timeline says so)
MAX_SPANS_KEPT = 100_000


class RoleTracker:
    def __init__(self, max_spans: int = MAX_SPANS_KEPT) -> None:
        self._open: dict[NodeId, tuple[str, int | None, float]] = {}
        self._spans: list[RoleSpan] = []
        self._max_spans = max_spans
        self._last_s = float("-inf")
        #: spans not kept because `max_spans` was reached
        self.dropped = 0

    def observe(self, t_s: float, roles: Mapping[NodeId, tuple[str, int | None]]) -> None:
        """Each node's (role, term) at `t_s`; times must not go back. A node missing from `roles` is
        unobserved from now on (its open span ends here)."""
        if t_s < self._last_s:
            raise LocalError(f"role observations must not go back in time ({t_s} < {self._last_s})")
        self._last_s = t_s
        for node_id in [n for n in self._open if n not in roles]:
            self._close(node_id, t_s)
        for node_id, (role, term) in roles.items():
            current = self._open.get(node_id)
            if current is not None and current[:2] == (role, term):
                continue
            if current is not None:
                self._close(node_id, t_s)
            self._open[node_id] = (role, term, t_s)

    def finish(self, end_s: float) -> tuple[RoleSpan, ...]:
        """Close every open span at `end_s`; the spans, ordered by start time then node."""
        for node_id in list(self._open):
            self._close(node_id, max(end_s, self._open[node_id][2]))
        return tuple(sorted(self._spans, key=lambda span: (span.start_s, span.node_id)))

    def _close(self, node_id: NodeId, t_s: float) -> None:
        role, term, start_s = self._open.pop(node_id)
        if t_s <= start_s:
            return  # seen for no time at all: nothing to draw
        if len(self._spans) >= self._max_spans:
            self.dropped += 1
            return
        self._spans.append(RoleSpan(node_id, role, start_s, t_s, term))
