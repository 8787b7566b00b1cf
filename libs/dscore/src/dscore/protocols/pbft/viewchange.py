"""The new view's decision procedure (TOCS 2002 section 4.5; Castro's thesis, 3.2.4), as pure functions.

Given a set S of VIEW-CHANGE messages (at least a quorum, each authenticated by its sender to whoever holds
it), the new primary picks:

- the checkpoint: the highest `h` such that f + 1 messages hold checkpoint `(h, d)` in C (their stable one
  or a later one of their own: at least one correct replica computed `d`) and a quorum of messages have a
  stable checkpoint at or below `h`;
- for every sequence number `n` above `h` mentioned in S, a request:

  A. digest `d` from an entry `(n, v, d)` of some message's P such that
     A1. a quorum of messages in S have a stable checkpoint below `n` and either no P entry for `n`, or a
         P entry `(n, v', d')` with `v' < v`, or `v' == v` and `d' == d` (nothing prepared later disagrees);
     A2. f + 1 messages in S have a Q entry `(n, v'', d)` with `v'' >= v` (a correct replica pre-prepared
         it at least that late, so a lie about P cannot win);
  B. the null request, if a quorum of messages in S have a stable checkpoint below `n` and no P entry
     for `n`.

If a request committed at `n` at any correct replica, a quorum of replicas prepared it, so every quorum S
holds one correct replica's P entry for it: B cannot hold and A holds for it alone. `choose` returns None
while some `n` is undecided (the primary waits for more VIEW-CHANGE messages). Backups run `check` on the
VIEW-CHANGE messages named by a NEW-VIEW that they received themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from dscore.protocols.pbft.auth import NULL_DIGEST
from dscore.protocols.pbft.messages import PEntry, ViewChange


def select_checkpoint(vcs: Sequence[ViewChange], quorum: int, weak: int) -> tuple[int, bytes] | None:
    best: tuple[int, bytes] | None = None
    claims = _checkpoint_claims(vcs)
    for (seq, digest), count in claims.items():
        if count < weak:
            continue
        if sum(1 for vc in vcs if vc.stable_seq <= seq) < quorum:
            continue
        if best is None or seq > best[0]:
            best = (seq, digest)
    return best


def _checkpoint_claims(vcs: Sequence[ViewChange]) -> dict[tuple[int, bytes], int]:
    claims: dict[tuple[int, bytes], int] = {}
    for vc in vcs:
        held = {(vc.stable_seq, vc.stable_digest)} | {(c.seq, c.digest) for c in vc.checkpoints}
        for key in held:
            claims[key] = claims.get(key, 0) + 1
    return claims


def _p_entry(vc: ViewChange, seq: int) -> PEntry | None:
    for entry in vc.prepared:
        if entry.seq == seq:
            return entry
    return None


def condition_a(vcs: Sequence[ViewChange], candidate: PEntry, quorum: int, weak: int) -> bool:
    n, v, d = candidate.seq, candidate.view, candidate.digest
    agreeing = 0
    for vc in vcs:
        if vc.stable_seq >= n:
            continue
        other = _p_entry(vc, n)
        if other is None or other.view < v or (other.view == v and other.digest == d):
            agreeing += 1
    if agreeing < quorum:
        return False
    support = sum(
        1 for vc in vcs if any(q.seq == n and q.digest == d and q.view >= v for q in vc.preprepared)
    )
    return support >= weak


def condition_b(vcs: Sequence[ViewChange], seq: int, quorum: int) -> bool:
    return sum(1 for vc in vcs if vc.stable_seq < seq and _p_entry(vc, seq) is None) >= quorum


def choose(
    vcs: Sequence[ViewChange], view: int, quorum: int, weak: int
) -> tuple[tuple[int, bytes], tuple[PEntry, ...]] | None:
    """The checkpoint and the requests for sequence numbers above it, or None if undecided yet."""
    checkpoint = select_checkpoint(vcs, quorum, weak)
    if checkpoint is None:
        return None
    h = checkpoint[0]
    seqs = [e.seq for vc in vcs for e in vc.prepared] + [q.seq for vc in vcs for q in vc.preprepared]
    top = max((n for n in seqs if n > h), default=h)
    chosen: list[PEntry] = []
    for n in range(h + 1, top + 1):
        candidates = sorted(
            {e for vc in vcs for e in vc.prepared if e.seq == n},
            key=lambda e: (-e.view, e.digest),
        )
        picked = next((e for e in candidates if condition_a(vcs, e, quorum, weak)), None)
        if picked is not None:
            chosen.append(PEntry(n, view, picked.digest, picked.data, picked.origins))
        elif condition_b(vcs, n, quorum):
            chosen.append(PEntry(n, view, NULL_DIGEST, b"", ()))
        else:
            return None
    return checkpoint, tuple(chosen)


def check(
    vcs: Sequence[ViewChange],
    view: int,
    checkpoint: tuple[int, bytes],
    chosen: Sequence[PEntry],
    *,
    quorum: int,
    weak: int,
) -> str | None:
    """Why a NEW-VIEW's choices do not follow from `vcs` (None: they do)."""
    seq, digest = checkpoint
    if _checkpoint_claims(vcs).get((seq, digest), 0) < weak and seq > 0:
        return f"checkpoint {seq} is not held by f + 1 replicas"
    if sum(1 for vc in vcs if vc.stable_seq <= seq) < quorum:
        return f"checkpoint {seq} is above the stable checkpoints of a quorum"
    by_seq = {e.seq: e for e in chosen}
    if len(by_seq) != len(chosen):
        return "a sequence number is chosen twice"
    if by_seq and sorted(by_seq) != list(range(seq + 1, max(by_seq) + 1)):
        return "the chosen requests leave a gap"
    mentioned = {e.seq for vc in vcs for e in vc.prepared if e.seq > seq}
    if not mentioned <= set(by_seq):
        return f"prepared requests at {sorted(mentioned - set(by_seq))} were left out"
    for n, entry in sorted(by_seq.items()):
        if n <= seq or entry.view != view:
            return f"entry {n} is outside the new view's log"
        candidates = [e for vc in vcs for e in vc.prepared if e.seq == n and e.digest == entry.digest]
        justified = any(condition_a(vcs, e, quorum, weak) for e in candidates)
        if entry.digest == NULL_DIGEST:
            # B, or A for a null request prepared in an earlier view change
            if entry.data or entry.origins or not (justified or condition_b(vcs, n, quorum)):
                return f"a null request at {n} is not justified"
            continue
        if not justified:
            return f"the request chosen at {n} is not justified"
    return None
