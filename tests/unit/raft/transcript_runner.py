"""Golden scenario transcripts for Raft, in the style of etcd raft's datadriven tests
(github.com/cockroachdb/datadriven, etcd's raft/testdata/*.txt).

File format
-----------

A transcript is a sequence of blocks, each a command line, a `----` line, and the expected output, which
ends at the next blank line (or the end of the file)::

    # comment lines and blank lines between blocks are kept as they are
    propose n1 x
    ----
    appended [2@1 "x"]

Arguments are words (shell-style quoting allowed) and `key=value` pairs. The commands drive a
`raft_harness.Cluster`, whose safety checks (election safety, leader completeness, state-machine safety)
stay on; Log Matching across the live nodes is checked after every command as well. A violation fails the
test, whatever the expected text says. A mistake in the transcript itself (an unknown command, a bad
argument, an unknown node) raises `TranscriptError` naming the file and line. Errors a node reports to its
caller (`NotLeaderError`, `ConfChangeRejectedError`, other `LocalError`s) are output: `error: ...`.

`run_transcript(path)` compares every block's output with the expected text and raises
`TranscriptMismatch` with a unified diff per differing block (file:line of the command). With
`rewrite=True` it writes the produced output into the file instead, like datadriven's `-rewrite`
(`DSCORE_REWRITE_GOLDEN=1 .venv/bin/pytest tests/unit/raft/test_golden_transcripts.py`). Read the diff
of a rewrite before committing it: the transcripts are only worth what their review was.

Notation
--------

- Nodes are `n1`..`nN`. `I@T` is the log entry (or position) at index I with term T; `0@0` is the empty
  position before the first entry.
- An entry prints as `I@T` followed by `noop`, the command in double quotes (`"x"`) or the configuration
  it installs (`conf(n1 n2 n3 learners=n4)`). Long entry lists keep their two ends: `[a, ... 7 more ..., z]`.
- A message prints on one line as `src->dst Kind field=value ...`:

  - `VoteRequest term=2 last=3@1` (`transfer` when started by TimeoutNow) and
    `VoteResponse term=2 granted|rejected`; pre-vote (9.6) ones print as `PreVoteRequest` /
    `PreVoteResponse` (a pre-vote request carries the term the sender would campaign for);
  - `AppendEntries term=2 prev=1@1 commit=1 entries=[2@2 noop, 3@2 "x"]`;
  - `AppendResponse term=2 match=3` on success, `AppendResponse term=2 reject index=5 hint=2@1` on a
    failed consistency check at `index` (the hint is where the leader should probe next);
  - `Heartbeat term=2 commit=3 round=4`, `HeartbeatResponse term=2 round=4`;
  - `InstallSnapshot term=2 snap=10@1 conf=(n1 n2 n3) offset=0 bytes=16 [done entries=[...]]`,
    `SnapshotResponse term=2 index=10 next=16`;
  - `TimeoutNow term=2`.

  A message that the network loses is printed with `[dropped: partitioned]` or `[dropped: n3 is down]`.
- What a command or a delivered message changed is printed as events, one per line (indented under the
  delivered message): `n2 became follower at term 2` (a role change), `n2 term 1 -> 2` (a term change
  alone), `n2 voted for n1`, `n2 commit 1 -> 3`, `n3 snapshot at 10@1`, `n1 read #1 ready at index 3`,
  `n1 read #1 failed`, `n4 config (n1 n2 n3 n4)`, and notable drops counted by the core (for instance
  `n2 ignores a vote request: it heard from a leader within the election timeout`).

Commands
--------

cluster n=3 [seed=0] [election=10] [heartbeat=1] [pre_vote=true] [check_quorum=true] [max_entries=512]
        [max_inflight=256] [chunk=1048576]
    A fresh cluster of voters n1..nN (the rest of `RaftConfig` keeps its defaults; `chunk` is
    `snapshot_chunk_bytes`, `max_entries` is `max_entries_per_msg`). Prints the configuration.
campaign nX
    nX starts an election now (a pre-vote first if pre_vote is on), as if its election timer fired:
    `nX campaigns: candidate at term 2`, or `nX campaigns: pre-candidate at term 1 (pre-vote for term 2)`.
tick <nX[,nY...]|all> [N=1] [deliver=false]
    Tick the given live nodes N times, one round at a time (in node order). Messages they send stay queued, unless `deliver=true`: then
    every queued message is delivered silently after each round. Events print as `tick K: ...`; a node
    whose election timer fired prints `nX timed out: ...` (as for `campaign`).
timers
    Each live node's election timer: ticks elapsed and its randomized timeout (leaders: heartbeat timer).
propose nX data [data...]
    nX appends one entry per data word (one Ready for all of them).
deliver [from=nX,..] [to=nX,..] [type=Kind,..] [quiet=false]
    Deliver queued messages that match (all by default) in FIFO order, including ones sent in reply,
    until none matches; each printed with the events it caused. `quiet=true` prints the events only and
    a count.
deliver-one [from=..] [to=..] [type=..]
    Deliver the first queued message that matches.
drop [from=..] [to=..] [type=..]
    Remove matching queued messages (all by default), printing them.
queue
    Print the queued messages without delivering them.
partition nA,nB | nC,..
    Cut every link between the groups (both directions); links inside a group stay. Replaces any cut.
isolate nX
    Cut nX off from every other node.
heal
    Restore every link.
crash nX
    nX stops: it keeps only what it persisted, and messages to it are lost until it restarts.
restart nX
    nX starts again from what it persisted (a new incarnation, with a fresh randomized timer).
status
    Per node: role, term, vote, commit, applied, last log position, snapshot (if any), known leader.
log [nX,..]
    Per node, its retained log.
sm [nX,..]
    Per live node, the commands its state machine applied (the harness's state machine is that list).
compact nX
    nX snapshots its state machine at its applied index and drops the log up to there.
transfer-leadership nX nY
    Leader nX hands leadership over to nY (3.10).
read-index nX [id=N]
    Register a linearizable read on nX (6.4); ids count up from 1 unless given.
add-learner nX nY / add-voter nX nY / promote-learner nX nY / remove-voter nX nY / remove-learner nX nY
    Leader nX proposes a single-server membership change. A node new to the cluster is started first
    with an empty configuration (it waits to be added).
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from raft_harness import Cluster, SafetyViolation, cfg

from dscore.core import codec
from dscore.core.envelope import Envelope
from dscore.core.errors import DecodeError, LocalError, NotLeaderError
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.protocols.raft import (
    AppendEntries,
    AppendResponse,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    RaftConfig,
    RaftNode,
    Role,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

SEPARATOR = "----"
#: a `deliver` that goes on longer than this is a message storm, not a scenario
MAX_DELIVERIES = 5_000
MAX_LISTED_ENTRIES = 6


class TranscriptError(Exception):
    """The transcript itself is wrong: malformed, an unknown command, a bad argument."""


class TranscriptMismatch(AssertionError):
    """Some blocks produced output other than the expected text."""


@dataclass
class Block:
    line: int  # 1-based line of the command
    command: str
    expected: list[str]
    out_start: int  # 0-based index of the first expected line in the file
    out_end: int  # 0-based index just past the last expected line


def parse(text: str, name: str = "<transcript>") -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        if line.strip() == SEPARATOR:
            raise TranscriptError(f"{name}:{i + 1}: '----' without a command before it")
        if i + 1 >= len(lines) or lines[i + 1].strip() != SEPARATOR:
            raise TranscriptError(f"{name}:{i + 1}: expected a '----' line after the command {line!r}")
        start = i + 2
        end = start
        while end < len(lines) and lines[end].strip():
            end += 1
        blocks.append(Block(i + 1, line.strip(), lines[start:end], start, end))
        i = end
    return blocks


# -- formatting ----------------------------------------------------------------------------------------


def pos(index: int, term: int | None) -> str:
    return f"{index}@{term if term is not None else '?'}"


def fmt_members(m: Membership) -> str:
    text = " ".join(m.voters)
    if m.learners:
        text += " learners=" + ",".join(m.learners)
    return f"({text})"


def fmt_entry(e: LogEntry) -> str:
    head = pos(e.index, e.term)
    if e.kind == EntryKind.NOOP:
        return f"{head} noop"
    if e.kind == EntryKind.CONFIG:
        try:
            members = codec.decode_value(e.data)
        except DecodeError:
            members = None
        return f"{head} conf{fmt_members(members)}" if isinstance(members, Membership) else f"{head} conf?"
    return f'{head} "{e.data.decode("ascii", "backslashreplace")}"'


def fmt_entries(entries: Sequence[LogEntry]) -> str:
    if len(entries) > MAX_LISTED_ENTRIES:
        first, last = fmt_entry(entries[0]), fmt_entry(entries[-1])
        return f"[{first}, ... {len(entries) - 2} more ..., {last}]"
    return "[" + ", ".join(fmt_entry(e) for e in entries) + "]"


def kind_name(content: object) -> str:
    if isinstance(content, VoteRequest) and content.pre_vote:
        return "PreVoteRequest"
    if isinstance(content, VoteResponse) and content.pre_vote:
        return "PreVoteResponse"
    return type(content).__name__


def fmt_content(m: object) -> str:
    kind = kind_name(m)
    if isinstance(m, VoteRequest):
        text = f"{kind} term={m.term} last={pos(m.last_log_index, m.last_log_term)}"
        return text + (" transfer" if m.transfer else "")
    if isinstance(m, VoteResponse):
        return f"{kind} term={m.term} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendEntries):
        return (
            f"{kind} term={m.term} prev={pos(m.prev_index, m.prev_term)} commit={m.commit} "
            f"entries={fmt_entries(m.entries)}"
        )
    if isinstance(m, AppendResponse):
        if m.reject:
            return f"{kind} term={m.term} reject index={m.index} hint={pos(m.hint_index, m.hint_term)}"
        return f"{kind} term={m.term} match={m.index}"
    if isinstance(m, Heartbeat):
        return f"{kind} term={m.term} commit={m.commit} round={m.round}"
    if isinstance(m, HeartbeatResponse):
        return f"{kind} term={m.term} round={m.round}"
    if isinstance(m, InstallSnapshot):
        text = (
            f"{kind} term={m.term} snap={pos(m.index, m.snap_term)} conf={fmt_members(m.config)} "
            f"offset={m.offset} bytes={len(m.data)}"
        )
        return text + (f" done entries={fmt_entries(m.entries)}" if m.done else "")
    if isinstance(m, SnapshotResponse):
        return f"{kind} term={m.term} index={m.index} next={m.next_offset}"
    if isinstance(m, TimeoutNow):
        return f"{kind} term={m.term}"
    return f"{kind} {m!r}"


def fmt_envelope(e: Envelope) -> str:
    return f"{e.source}->{e.destination} {fmt_content(e.content)}"


def role_name(role: Role) -> str:
    return role.value.replace("_", "-")


# -- events: what changed on the nodes ---------------------------------------------------------------------

#: core counters worth a line in a transcript, and how to say them
COUNTER_EVENTS = {
    "vote_in_lease": "ignores a vote request: it heard from a leader within the election timeout",
    "stale_term": "drops a message of a stale term",
    "check_quorum_step_down": "steps down: it did not hear from a quorum within an election timeout",
    "transfer_aborted": "aborts the leadership transfer: it did not complete within an election timeout",
    "ignored_timeout_now": "ignores TimeoutNow",
    "removed_leader_step_down": "steps down: its removal is committed",
    "conflict_with_committed": "REFUSES to overwrite a committed entry (a broken commit rule upstream)",
    "conflicting_leader": "drops a message from a second leader of its term",
}
# Counters for metrics only: the transcripts already say what they count ("became candidate", "became
# leader", "snapshot ...").
SILENT_COUNTERS = {"snapshot_sent", "snapshot_installed", "elections_started", "elections_won"}


@dataclass(frozen=True)
class View:
    node: RaftNode
    role: Role
    term: int
    vote: str | None
    commit: int
    snap: tuple[int, int]
    members: Membership
    reads: int
    failed: int
    counters: tuple[tuple[str, int], ...]


# -- the driver --------------------------------------------------------------------------------------------

Pred = Callable[[Envelope], bool]


@dataclass
class Args:
    words: list[str]
    opts: dict[str, str]


class Driver:
    def __init__(self) -> None:
        self._cluster: Cluster | None = None
        self.next_read_id = 1
        self.commands: dict[str, Callable[[Args], list[str]]] = {
            "cluster": self.cmd_cluster,
            "campaign": self.cmd_campaign,
            "tick": self.cmd_tick,
            "timers": self.cmd_timers,
            "propose": self.cmd_propose,
            "deliver": self.cmd_deliver,
            "deliver-one": self.cmd_deliver_one,
            "drop": self.cmd_drop,
            "queue": self.cmd_queue,
            "partition": self.cmd_partition,
            "isolate": self.cmd_isolate,
            "heal": self.cmd_heal,
            "crash": self.cmd_crash,
            "restart": self.cmd_restart,
            "status": self.cmd_status,
            "log": self.cmd_log,
            "compact": self.cmd_compact,
            "sm": self.cmd_sm,
            "transfer-leadership": self.cmd_transfer,
            "read-index": self.cmd_read_index,
            "add-learner": self.membership_cmd("add_learner"),
            "add-voter": self.membership_cmd("add_voter"),
            "promote-learner": self.membership_cmd("promote_learner"),
            "remove-voter": self.membership_cmd("remove_voter"),
            "remove-learner": self.membership_cmd("remove_learner"),
        }

    # -- plumbing --------------------------------------------------------------------------------------

    @property
    def c(self) -> Cluster:
        if self._cluster is None:
            raise TranscriptError("no cluster yet: start with `cluster n=...`")
        return self._cluster

    def run(self, command: str) -> list[str]:
        try:
            tokens = shlex.split(command)
        except ValueError as e:
            raise TranscriptError(f"cannot parse the command: {e}") from None
        name, rest = tokens[0], tokens[1:]
        handler = self.commands.get(name)
        if handler is None:
            known = ", ".join(sorted(self.commands))
            raise TranscriptError(f"unknown command {name!r} (known: {known})")
        args = Args([], {})
        for tok in rest:
            key, eq, value = tok.partition("=")
            if eq and key.isidentifier():
                args.opts[key] = value
            else:
                args.words.append(tok)
        out = handler(args)
        if self._cluster is not None:
            self._cluster.check_log_matching()
        out = [line.rstrip() for line in out]
        if any(not line for line in out):
            raise AssertionError(f"the runner produced a blank line for {command!r}")  # would end the block
        return out or ["ok"]

    def node_id(self, word: str, *, live: bool = False) -> str:
        if word not in self.c.ids:
            raise TranscriptError(f"unknown node {word!r} (nodes: {', '.join(self.c.ids)})")
        if live and word not in self.c.nodes:
            raise TranscriptError(f"{word} is down")
        return word

    def node_list(self, word: str) -> list[str]:
        if word == "all":
            return list(self.c.ids)
        return [self.node_id(w) for w in word.split(",") if w]

    @staticmethod
    def words(args: Args, n: int, usage: str, *, at_least: bool = False) -> list[str]:
        if len(args.words) < n or (not at_least and len(args.words) != n):
            raise TranscriptError(f"usage: {usage}")
        return args.words

    @staticmethod
    def opt_int(args: Args, key: str, default: int) -> int:
        value = args.opts.pop(key, None)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise TranscriptError(f"{key}= wants an integer, got {value!r}") from None

    @staticmethod
    def opt_bool(args: Args, key: str, default: bool) -> bool:
        value = args.opts.pop(key, None)
        if value is None:
            return default
        if value not in ("true", "false"):
            raise TranscriptError(f"{key}= wants true or false, got {value!r}")
        return value == "true"

    @staticmethod
    def no_more_opts(args: Args) -> None:
        if args.opts:
            raise TranscriptError(f"unknown argument(s): {', '.join(sorted(args.opts))}")

    def filter_pred(self, args: Args) -> Pred:
        srcs = set(self.node_list(args.opts.pop("from"))) if "from" in args.opts else None
        dsts = set(self.node_list(args.opts.pop("to"))) if "to" in args.opts else None
        kinds = set(args.opts.pop("type").split(",")) if "type" in args.opts else None
        self.no_more_opts(args)

        def pred(e: Envelope) -> bool:
            return (
                (srcs is None or e.source in srcs)
                and (dsts is None or e.destination in dsts)
                and (kinds is None or kind_name(e.content) in kinds)
            )

        return pred

    def drop_reason(self, e: Envelope) -> str | None:
        c = self.c
        if e.destination in c.down or e.destination not in c.nodes:
            return f"{e.destination} is down"
        if (e.source, e.destination) in c.cut:
            return "partitioned"
        if c.filter is not None and not c.filter(e):
            return "filtered"
        return None

    # -- events ----------------------------------------------------------------------------------------

    def views(self) -> dict[str, View]:
        c = self.c
        return {
            i: View(
                n,
                n.role,
                n.term,
                n.vote,
                n.commit_index,
                (n.snapshot_index, n.snapshot_term),
                n.membership,
                len(c.reads[i]),
                len(c.failed_reads[i]),
                tuple(sorted(n.counters.items())),
            )
            for i, n in c.nodes.items()
        }

    def campaigns_since(self, mark: int, node_id: str) -> VoteRequest | None:
        """The vote request `node_id` broadcast since `c.trace[mark]`, if it started a campaign."""
        for e in self.c.trace[mark:]:
            if e.source == node_id and isinstance(e.content, VoteRequest):
                return e.content
        return None

    def events(
        self,
        before: dict[str, View],
        after: dict[str, View],
        *,
        campaigns: dict[str, VoteRequest] | None = None,
        verb: str = "campaigns",
    ) -> list[str]:
        out: list[str] = []
        for i in self.c.ids:
            a, b = before.get(i), after.get(i)
            if a is None or b is None or a.node is not b.node:
                continue
            request = (campaigns or {}).get(i)
            if request is not None:
                pre = f" (pre-vote for term {request.term})" if request.pre_vote else ""
                out.append(f"{i} {verb}: {role_name(b.role)} at term {b.term}{pre}")
            elif a.role is not b.role:
                out.append(f"{i} became {role_name(b.role)} at term {b.term}")
            elif a.term != b.term:
                out.append(f"{i} term {a.term} -> {b.term}")
            if b.vote is not None and b.vote != i and (a.vote != b.vote or a.term != b.term):
                out.append(f"{i} voted for {b.vote}")
            if a.snap != b.snap:
                out.append(f"{i} snapshot at {pos(*b.snap)}")
            if a.commit != b.commit:
                out.append(f"{i} commit {a.commit} -> {b.commit}")
            if a.members != b.members:
                out.append(f"{i} config {fmt_members(b.members)}")
            for r in self.c.reads[i][a.reads : b.reads]:
                out.append(f"{i} read #{r.request_id} ready at index {r.index}")
            for r_id in self.c.failed_reads[i][a.failed : b.failed]:
                out.append(f"{i} read #{r_id} failed")
            old = dict(a.counters)
            for name, count in b.counters:
                if count > old.get(name, 0) and name not in SILENT_COUNTERS:
                    if name == "vote_in_lease" and b.role is Role.LEADER:
                        out.append(f"{i} ignores a vote request: it is an active leader")
                    else:
                        out.append(f"{i} {COUNTER_EVENTS.get(name, f'counts {name}')}")
        return out

    def deliver_loop(self, pred: Pred, *, verbose: bool, single: bool = False) -> tuple[list[str], int, int]:
        c = self.c
        out: list[str] = []
        delivered = dropped = 0
        while True:
            e = next((x for x in c.queue if pred(x)), None)
            if e is None:
                break
            c.queue.remove(e)
            if delivered + dropped >= MAX_DELIVERIES:
                raise TranscriptError(f"message storm: more than {MAX_DELIVERIES} deliveries")
            reason = self.drop_reason(e)
            before = self.views()
            if reason is None:
                delivered += 1
                c.delivered += 1
                c.nodes[e.destination].step(e)
                c.process(e.destination)
            else:
                dropped += 1
            events = self.events(before, self.views())
            if verbose:
                out.append(fmt_envelope(e) + (f" [dropped: {reason}]" if reason else ""))
                out.extend("  " + ev for ev in events)
            else:
                out.extend(events)
            if single:
                break
        return out, delivered, dropped

    def with_events(self, action: Callable[[], list[str]]) -> list[str]:
        before = self.views()
        out = action()
        return out + self.events(before, self.views())

    def core_call(self, call: Callable[[], object]) -> tuple[object, str | None]:
        try:
            return call(), None
        except LocalError as e:
            return None, self.error_line(e)

    @staticmethod
    def error_line(e: LocalError) -> str:
        hint = f" (leader hint: {e.leader_hint})" if isinstance(e, NotLeaderError) and e.leader_hint else ""
        return f"error: {type(e).__name__}: {e}{hint}"

    # -- commands --------------------------------------------------------------------------------------

    def cmd_cluster(self, args: Args) -> list[str]:
        n = self.opt_int(args, "n", 3)
        seed = self.opt_int(args, "seed", 0)
        base = RaftConfig()
        config = cfg(
            election_timeout_ticks=self.opt_int(args, "election", base.election_timeout_ticks),
            heartbeat_ticks=self.opt_int(args, "heartbeat", base.heartbeat_ticks),
            pre_vote=self.opt_bool(args, "pre_vote", base.pre_vote),
            check_quorum=self.opt_bool(args, "check_quorum", base.check_quorum),
            max_entries_per_msg=self.opt_int(args, "max_entries", base.max_entries_per_msg),
            max_inflight_msgs=self.opt_int(args, "max_inflight", base.max_inflight_msgs),
            snapshot_chunk_bytes=self.opt_int(args, "chunk", base.snapshot_chunk_bytes),
        )
        self.no_more_opts(args)
        self.words(args, 0, "cluster n=N [seed=S] [config overrides]")
        if not 1 <= n <= 9:
            raise TranscriptError("n= must be between 1 and 9")
        self._cluster = Cluster([f"n{k}" for k in range(1, n + 1)], config, seed=seed)
        self.next_read_id = 1
        return [
            f"voters {' '.join(self._cluster.ids)} seed={seed}",
            f"election={config.election_timeout_ticks} heartbeat={config.heartbeat_ticks} "
            f"pre_vote={str(config.pre_vote).lower()} check_quorum={str(config.check_quorum).lower()}",
        ]

    def cmd_campaign(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "campaign nX")
        i = self.node_id(word, live=True)

        before = self.views()
        mark = len(self.c.trace)
        self.c.nodes[i].campaign()
        self.c.process(i)
        request = self.campaigns_since(mark, i)
        return self.events(before, self.views(), campaigns={i: request} if request else None)

    def cmd_tick(self, args: Args) -> list[str]:
        deliver = self.opt_bool(args, "deliver", False)
        self.no_more_opts(args)
        words = self.words(args, 1, "tick <nX[,nY]|all> [N] [deliver=true]", at_least=True)
        count = 1
        if len(words) == 2:
            try:
                count = int(words[1])
            except ValueError:
                raise TranscriptError(f"tick count must be an integer, got {words[1]!r}") from None
        elif len(words) > 2:
            raise TranscriptError("usage: tick <nX[,nY]|all> [N] [deliver=true]")
        who = self.node_list(words[0])
        c = self.c
        out: list[str] = []
        for k in range(1, count + 1):
            before = self.views()
            campaigns = {}
            for i in who:
                node = c.nodes.get(i)
                if node is None:
                    continue
                mark = len(c.trace)
                node.tick()
                c.process(i)
                request = self.campaigns_since(mark, i)
                if request is not None:
                    campaigns[i] = request
            events = self.events(before, self.views(), campaigns=campaigns, verb="timed out")
            if deliver:
                more, _, _ = self.deliver_loop(lambda _e: True, verbose=False)
                events += more
            out.extend(f"tick {k}: {ev}" for ev in events)
        return out

    def cmd_timers(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        self.words(args, 0, "timers")
        out = []
        for i in self.c.ids:
            n = self.c.nodes.get(i)
            if n is None:
                out.append(f"{i} down")
            elif n.role is Role.LEADER:
                hb = n._heartbeat_elapsed
                out.append(f"{i} leader: heartbeat elapsed={hb} every={n.config.heartbeat_ticks}")
            else:
                out.append(
                    f"{i} {role_name(n.role)}: elapsed={n._election_elapsed} timeout={n._randomized_timeout}"
                )
        return out

    def cmd_propose(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        words = self.words(args, 2, "propose nX data [data...]", at_least=True)
        i = self.node_id(words[0], live=True)
        node = self.c.nodes[i]

        def act() -> list[str]:
            appended: list[LogEntry] = []
            err = None
            for data in words[1:]:
                try:
                    index = node.propose(data.encode())
                except LocalError as e:
                    err = self.error_line(e)
                    break
                appended.append(node.entries(index, index)[0])
            self.c.process(i)
            return ([f"appended {fmt_entries(appended)}"] if appended else []) + ([err] if err else [])

        return self.with_events(act)

    def cmd_deliver(self, args: Args) -> list[str]:
        quiet = self.opt_bool(args, "quiet", False)
        self.words(args, 0, "deliver [from=..] [to=..] [type=..] [quiet=true]")
        out, delivered, dropped = self.deliver_loop(self.filter_pred(args), verbose=not quiet)
        if quiet:
            out.append(f"({delivered} delivered, {dropped} dropped)")
        return out

    def cmd_deliver_one(self, args: Args) -> list[str]:
        self.words(args, 0, "deliver-one [from=..] [to=..] [type=..]")
        out, _, _ = self.deliver_loop(self.filter_pred(args), verbose=True, single=True)
        return out or ["no matching message"]

    def cmd_drop(self, args: Args) -> list[str]:
        self.words(args, 0, "drop [from=..] [to=..] [type=..]")
        pred = self.filter_pred(args)
        c = self.c
        gone = [e for e in c.queue if pred(e)]
        for e in gone:
            c.queue.remove(e)
        return [f"dropped {fmt_envelope(e)}" for e in gone] or ["nothing to drop"]

    def cmd_queue(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        self.words(args, 0, "queue")
        return [fmt_envelope(e) for e in self.c.queue] or ["empty"]

    def cmd_partition(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        text = " ".join(args.words)
        groups = [self.node_list(",".join(g.replace(",", " ").split())) for g in text.split("|")]
        if len(groups) < 2 or any(not g for g in groups):
            raise TranscriptError("usage: partition nA,nB | nC,nD [| ...]")
        self.c.partition(*groups)
        return [" | ".join(" ".join(g) for g in groups)]

    def cmd_isolate(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "isolate nX")
        i = self.node_id(word)
        self.c.isolate(i)
        return [f"{i} | {' '.join(x for x in self.c.ids if x != i)}"]

    def cmd_heal(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        self.words(args, 0, "heal")
        self.c.heal()
        return []

    def durable_summary(self, i: str) -> str:
        d = self.c.durable[i]
        hs = d.hard_state
        term, vote, commit = (hs.term, hs.vote, hs.commit) if isinstance(hs, HardState) else (0, None, 0)
        last = d.entries[-1] if d.entries else None
        snap = d.snapshot
        last_pos = pos(last.index, last.term) if last else pos(snap.index, snap.term) if snap else pos(0, 0)
        text = f"term={term} vote={vote or '-'} commit={commit} last={last_pos}"
        return text + (f" snap={pos(snap.index, snap.term)}" if snap else "")

    def cmd_crash(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "crash nX")
        i = self.node_id(word, live=True)
        self.c.crash(i)
        return [f"{i} crashed; on disk: {self.durable_summary(i)}"]

    def cmd_restart(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "restart nX")
        i = self.node_id(word)
        if i not in self.c.down:
            raise TranscriptError(f"{i} is not down")
        self.c.restart(i)
        return [self.status_line(i)]

    def status_line(self, i: str) -> str:
        n = self.c.nodes.get(i)
        if n is None:
            return f"{i} down (on disk: {self.durable_summary(i)})"
        text = (
            f"{i} {role_name(n.role):<13} term={n.term} vote={n.vote or '-'} commit={n.commit_index} "
            f"applied={self.c.applied[i]} last={pos(n.last_index, n.last_term)}"
        )
        if n.snapshot_index:
            text += f" snap={pos(n.snapshot_index, n.snapshot_term)}"
        return text + f" lead={n.leader_id or '-'}"

    def cmd_status(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        self.words(args, 0, "status")
        return [self.status_line(i) for i in self.c.ids]

    def cmd_log(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        words = self.words(args, 0, "log [nX,..]", at_least=True)
        who = self.node_list(",".join(words)) if words else list(self.c.ids)
        out = []
        for i in who:
            n = self.c.nodes.get(i)
            if n is None:
                d = self.c.durable[i]
                entries: Sequence[LogEntry] = d.entries
                snap = (d.snapshot.index, d.snapshot.term) if d.snapshot else (0, 0)
                label = f"{i} (down)"
            else:
                entries = n.entries()
                snap = (n.snapshot_index, n.snapshot_term)
                label = i
            parts = [f"snap={pos(*snap)}"] if snap[0] else []
            parts += [fmt_entry(e) for e in entries]
            out.append(f"{label}: {', '.join(parts) if parts else 'empty'}")
        return out

    def cmd_sm(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        words = self.words(args, 0, "sm [nX,..]", at_least=True)
        who = self.node_list(",".join(words)) if words else list(self.c.ids)
        out = []
        for i in who:
            if i not in self.c.nodes:
                out.append(f"{i} (down)")
                continue
            cmds = [f'"{d.decode("ascii", "backslashreplace")}"' for d in self.c.sm[i]]
            out.append(f"{i}: {' '.join(cmds) if cmds else 'empty'} (applied={self.c.applied[i]})")
        return out

    def cmd_compact(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "compact nX")
        i = self.node_id(word, live=True)

        def act() -> list[str]:
            _, err = self.core_call(lambda: self.c.compact(i))
            return [err] if err else []

        return self.with_events(act)

    def cmd_transfer(self, args: Args) -> list[str]:
        self.no_more_opts(args)
        a, b = self.words(args, 2, "transfer-leadership nX nY")
        i, to = self.node_id(a, live=True), self.node_id(b)

        def act() -> list[str]:
            _, err = self.core_call(lambda: self.c.nodes[i].transfer_leadership(to))
            self.c.process(i)
            return [err] if err else []

        return self.with_events(act)

    def cmd_read_index(self, args: Args) -> list[str]:
        rid = self.opt_int(args, "id", self.next_read_id)
        self.no_more_opts(args)
        (word,) = self.words(args, 1, "read-index nX [id=N]")
        i = self.node_id(word, live=True)

        def act() -> list[str]:
            _, err = self.core_call(lambda: self.c.nodes[i].read_index(rid))
            self.c.process(i)
            if err:
                return [err]
            self.next_read_id = max(self.next_read_id, rid + 1)
            return [f"read #{rid} registered"]

        return self.with_events(act)

    def membership_cmd(self, method: str) -> Callable[[Args], list[str]]:
        usage = f"{method.replace('_', '-')} nLeader nX"

        def cmd(args: Args) -> list[str]:
            self.no_more_opts(args)
            a, b = self.words(args, 2, usage)
            i = self.node_id(a, live=True)
            if not (b.startswith("n") and b[1:].isdigit()):
                raise TranscriptError(f"node names are n1..n9, got {b!r}")
            out = []
            if b not in self.c.ids:
                self.c.add_node(b, join=True)
                out.append(f"started {b} with an empty configuration")

            def act() -> list[str]:
                index, err = self.core_call(lambda: getattr(self.c.nodes[i], method)(b))
                self.c.process(i)
                if err:
                    return [err]
                assert isinstance(index, int)
                return [f"appended {fmt_entries(self.c.nodes[i].entries(index, index))}"]

            return out + self.with_events(act)

        return cmd


# -- running a file ----------------------------------------------------------------------------------------


def run_transcript(path: Path, *, rewrite: bool = False) -> None:
    text = path.read_text()
    blocks = parse(text, str(path))
    driver = Driver()
    results: list[tuple[Block, list[str]]] = []
    for block in blocks:
        where = f"{path}:{block.line}"
        try:
            actual = driver.run(block.command)
        except TranscriptError as e:
            raise TranscriptError(f"{where}: {block.command}: {e}") from None
        except (SafetyViolation, AssertionError) as e:
            e.add_note(f"while running {where}: {block.command}")
            raise
        results.append((block, actual))
    if rewrite:
        lines = text.splitlines()
        for block, actual in reversed(results):
            lines[block.out_start : block.out_end] = actual
        new = "\n".join(lines) + "\n"
        if new != text:
            path.write_text(new)
        return
    diffs = []
    for block, actual in results:
        if actual != block.expected:
            diff = difflib.unified_diff(
                block.expected, actual, f"{path}:{block.line} expected", "actual", lineterm="", n=2
            )
            diffs.append(f"{path}:{block.line}: {block.command}\n" + "\n".join(diff))
    if diffs:
        raise TranscriptMismatch(
            f"{len(diffs)} block(s) of {path.name} differ from the expected output "
            "(DSCORE_REWRITE_GOLDEN=1 regenerates them; review the result):\n\n" + "\n\n".join(diffs)
        )
