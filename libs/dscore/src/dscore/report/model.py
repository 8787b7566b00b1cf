"""The data a run report is drawn from: one plain, frozen object per run (`ReportData`).

A demo (the embedded one in `dscore.demo`, or a stack of processes) fills a `ReportData` with what it
observed, and `dscore.report.render_html` turns it into the page; nothing in the page comes from anywhere
else, so the same data always gives the same bytes, and any stack that can fill these fields gets the same
report. Figures (availability, throughput, latency, failover) are not stored: they are computed from the
observations by `dscore.report.figures`, the one place that defines them, which the text report uses too.

Time: every `*_s` time in a `ReportData` is seconds since the start of the workload (t = 0 is when the
clients start; `duration_s` is when the workload stopped). Observations outside [0, duration_s) are not
drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dscore.check.result import CheckResult
from dscore.core.ids import NodeId
from dscore.runtime.client import Completion

#: `RoleSpan.role` for a node that is not running (killed, not yet restarted)
DOWN = "down"
#: the roles a leader timeline draws; any other role (follower, learner, ...) is the lane's background
LEADER = "leader"
CANDIDATES = frozenset({"candidate", "pre_candidate"})


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault as it happened: `kind` is kill_leader, restart, partition_leader or heal (others are drawn
    the same way); `description` is the sentence a person reads ("kill -9 leader n2")."""

    at_s: float
    kind: str
    description: str
    #: the leader the fault removed (kill_leader, partition_leader), if any: a failover follows it
    removed_leader: NodeId | None = None


@dataclass(frozen=True, slots=True)
class FailoverTime:
    """How long clients waited for a new leader after `fault` (see `figures.failover_time`)."""

    fault: FaultEvent
    #: seconds from the fault to the first successful write answered by another node; None if never
    seconds: float | None
    new_leader: NodeId | None


@dataclass(frozen=True, slots=True)
class RoleSpan:
    """Node `node_id` had `role` (as the node itself said: "leader", "candidate", "follower", ...,
    or `DOWN`) in `term` from `start_s` to `end_s`. Two nodes may both say "leader" at once, in
    different terms: a deposed leader cut off in a minority does not know it yet."""

    node_id: NodeId
    role: str
    start_s: float
    end_s: float
    term: int | None = None


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one run report shows, as observed (times: seconds since the workload started).

    - `completions`: every client operation that finished during the workload, in completion order
      (`Completion.time_s` rebased to the workload start; `node_id` the node that answered);
    - `faults`: the faults injected, in order; those with a `removed_leader` are followed by a failover;
    - `roles`: who was leader, candidate or down when, per node (`RoleTracker` builds them); the spans
      of one node do not overlap, and together cover [0, duration_s) where the node was observed;
    - `check`: the linearizability checker's result on the run's history (for a violation, its
      `violations` carry the operations involved);
    - `converged`: every replica ended with the same state; `node_failures`: runtimes that died of an
      unexpected error, as "node: error";
    - `cpu_s`: CPU seconds the run used during the workload (all processes of the stack), if measured;
    - `settings`: name/value pairs shown as they are at the foot of the page (tick, Raft options).
    """

    title: str
    #: "embedded" (one process) or "processes" (one process per node)
    stack: str
    protocol: str
    nodes: tuple[NodeId, ...]
    seed: int
    clients: int
    keys: int
    duration_s: float
    completions: tuple[Completion, ...]
    faults: tuple[FaultEvent, ...]
    roles: tuple[RoleSpan, ...]
    check: CheckResult
    converged: bool
    node_failures: tuple[str, ...] = ()
    cpu_s: float | None = None
    settings: tuple[tuple[str, str], ...] = field(default=())
