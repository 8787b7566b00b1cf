"""Linearizability checking: Wing & Gong's search with Lowe's memoization, as in Porcupine.

For each key (see `dscore.check.models`), the ops become call and return entries of a
doubly-linked list in history order, as in Porcupine's `checkSingle`. In a configuration
(the set of ops linearized so far, and the model state) the ops that may go next are those
whose call entry comes before the first return entry left in the list. The search tries
them one by one (see `_search` for which, and in what order): a step must pass the model
and reach a configuration not seen before; it then *lifts* the op's entries out of the list
and goes on from the new configuration. When nothing is left to try, it backtracks:
*unlifts* the last op and tries the next choice of the configuration before. The history is
linearizable once every `:ok` op is linearized; if the search backtracks past the start, it
is not.

Indeterminate (`:info`) ops have a call entry but no return entry (they return at
+infinity), so they may be linearized anywhere after their call, or never.

Speed, since this is the hot loop:

* values are interned to small ints per key (raw `str`s only for keys that `:append`);
* the linearized set of `:ok` ops is a *window*: ops are numbered in call order, every op
  below `window_base` is linearized, and the bits of `window` (a Python int) cover the rest,
  so a configuration costs O(concurrency), not O(history), to build and hash;
  indeterminate ops have their own bitset;
* before the search, an indeterminate write/cas/append whose value no read or cas that
  returns after its invocation observes is dropped: if a linearization uses it, removing
  it leaves one that does not (nothing can observe the state it creates), and dropping it
  saves the search from trying it at every later point;
* reductions that are sound (each keeps some linearization if there is one) cut the
  choices: forced reads, same-effect ops, doomed steps, unreachable reads, spent
  indeterminate ops and indeterminate-op dominance, each argued where `_search`
  describes it;
* a pre-check (`_find_stale_read`) finds, in O(n log n), reads that no order of the ops can
  satisfy (the classic stale read: a write of another value ran entirely after every write
  of the value read and before the read), which the search could only prove by trying
  every order of the ops before them;
* the clock is read every `CLOCK_CHECK_INTERVAL` search steps only.

On a violation the result names the first op whose return the history cannot explain: the
history cut at each :ok op's return (ops still open there indeterminate) is searched, in a
bisection, for the first cut that is not linearizable (`_first_violation`). It shows a
linearization of the cut just before that op returned, with the state after each op, and
the op stuck after it. The search's own longest path, which Knossos and Porcupine show,
can end at a wrong turn and name an op that is fine. When those searches run out of their
budget, the result shows the search's longest path and the `:ok` ops that had to come next
but could not take effect; when the pre-check found the violation and even that is past
the budget, the stale read and the write that hid the value it read.
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from dscore.check.edn import EdnValue, dumps
from dscore.check.history import History
from dscore.check.models import Model, ModelOp, OpKind, apply, canonical, get_model, interpret, why_not
from dscore.check.result import CheckResult, KeyResult, LinearizedStep, StuckOp, Verdict

# Search steps (linearization attempts that pass the model) between two clock reads.
CLOCK_CHECK_INTERVAL = 2048
# How many prefix steps an explanation prints (the last ones, just before the violation).
EXPLANATION_PREFIX_STEPS = 10
# At most this many ops are added to the search's longest path when explaining a violation.
EXTENSION_LIMIT = 2000
# When a violation is found without searching (see `_find_stale_read`), the search still runs
# to explain it, up to this many configurations (plus so many per op), which keeps the
# explanation deterministic; past that, the explanation names the op and why it is stuck.
EXPLANATION_SEARCH_BUDGET = 10_000
EXPLANATION_SEARCH_BUDGET_PER_OP = 10
# Each search that finds the first op a violating history cannot explain (see `_first_violation`)
# may take this many times the configurations the search that found the violation took.
EXPLANATION_SEARCH_FACTOR = 2
# Where a key appends, how many reads past the ops that could go next each configuration
# also checks for reachability, looking at most this many list entries ahead.
LOOKAHEAD_READS = 4
LOOKAHEAD_STEPS = 64
# How many list entries a configuration scans to find out that its state is unobservable.
UNOBSERVABLE_SCAN_LIMIT = 256

_NEVER = 1 << 62  # the return of an indeterminate op: after everything


class _Unobservable:
    """The state of a key that appends, when a put will overwrite it before anyone looks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unobservable>"


_UNOBSERVABLE = _Unobservable()
_READ, _WRITE, _CAS, _APPEND = int(OpKind.READ), int(OpKind.WRITE), int(OpKind.CAS), int(OpKind.APPEND)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One key's ops ready for the search; entry `e < size` is op e's call, `size + e` its return."""

    ops: tuple[ModelOp, ...]  # in call order
    kinds: list[int]
    # Interned (int, or str where the key appends) arguments: Any, as the hot loop mixes them.
    first_args: list[Any]  # read/write/append value, cas `from`
    second_args: list[Any]  # cas `to`
    rank: list[int]  # >= 0: rank of an :ok op in call order; < 0: ~rank of an indeterminate op
    next_entry: list[int]
    prev_entry: list[int]
    initial_state: Any
    certain_count: int
    values: list[EdnValue]  # interned id -> value
    # Value ids an op needs the state to hold (a :ok read or cas) and installs (write, cas);
    # -1 for none. Empty when the key appends (states are then unbounded strings).
    consumes: list[int]
    produces: list[int]
    # Ops with the same effect (kind and arguments) share an effect id; reads have -1.
    effect: list[int]
    # Among same-effect ops that could go next, only the lowest `preference` is tried.
    preference: list[int]
    # An indeterminate op is worth trying only while some op observing what it installs
    # may still be linearized: until the latest return of such an op.
    useful_until: list[int]

    def decode(self, state: object) -> EdnValue:
        if type(state) is int:
            return self.values[state]
        assert type(state) is str
        return state


def _compile(model: Model, ops: tuple[ModelOp, ...]) -> _Compiled:
    has_append = any(op.kind is OpKind.APPEND for op in ops)
    ids: dict[Hashable, int] = {}
    values: list[EdnValue] = []

    def encode(value: EdnValue) -> object:
        # Strings stay raw where appends build new ones; everything else is an int id.
        if has_append and type(value) is str:
            return value
        identity = canonical(value)
        found = ids.get(identity)
        if found is None:
            found = ids[identity] = len(values)
            values.append(value)
        return found

    initial_state = encode(model.initial)
    # Observers: ops that need a given state (reads, cas). Where the key appends, string
    # states are observed by containment, through one text of all observed strings in
    # order of return (an indeterminate cas never returns: it goes last).
    last_observer: dict[object, int] = {}  # value id -> latest return of an op observing it
    observed_texts: list[tuple[int, str]] = []
    for op in ops:
        if op.kind is OpKind.READ or op.kind is OpKind.CAS:
            observed_at = _NEVER if op.ret is None else op.ret
            if has_append and type(op.argument) is str:
                observed_texts.append((observed_at, op.argument))
            else:
                value_id = encode(op.argument)
                last_observer[value_id] = max(last_observer.get(value_id, -1), observed_at)
    observed_texts.sort()
    observed_returns = [observed_at for observed_at, _ in observed_texts]
    text_offsets: list[int] = []
    offset = 0
    for _, text in observed_texts:
        text_offsets.append(offset)
        offset += len(text) + 1
    observed_text = "\x00".join(text for _, text in observed_texts)

    def last_observed(value: EdnValue, after: int) -> int:
        """The latest return of an op returning after `after` that observes `value`, or -1."""
        if has_append and type(value) is str:
            # Every later state contains the value, until a put or cas.
            first = bisect.bisect_right(observed_returns, after)
            if first == len(observed_texts):
                return -1
            found = observed_text.rfind(value, text_offsets[first])
            if found < 0:
                return -1
            text = bisect.bisect_right(text_offsets, found) - 1
            if found + len(value) > text_offsets[text] + len(observed_texts[text][1]):
                return _NEVER  # the match straddles two texts: assume the worst
            return observed_returns[text]
        return last_observer.get(encode(value), -1)

    kept: list[ModelOp] = []
    useful_until: list[int] = []
    for op in ops:
        if op.certain or op.kind is OpKind.READ:
            useful_until.append(_NEVER)
        else:
            last = last_observed(op.new_value if op.kind is OpKind.CAS else op.argument, op.call)
            if last < op.call:
                continue  # nothing can ever observe what it installs
            useful_until.append(last)
        kept.append(op)

    size = len(kept)
    rank: list[int] = []
    certain_count = indeterminate_count = 0
    events: list[tuple[int, int]] = []
    for entry, op in enumerate(kept):
        events.append((op.call, entry))
        if op.certain:
            ret = op.ret
            assert ret is not None
            events.append((ret, size + entry))
            rank.append(certain_count)
            certain_count += 1
        else:
            rank.append(~indeterminate_count)
            indeterminate_count += 1
    events.sort()
    head, tail = 2 * size, 2 * size + 1
    next_entry = [tail] * (2 * size + 2)
    prev_entry = [head] * (2 * size + 2)
    previous = head
    for _, entry in events:
        next_entry[previous] = entry
        prev_entry[entry] = previous
        previous = entry
    next_entry[previous] = tail
    prev_entry[tail] = previous
    first_args = [encode(op.argument) for op in kept]
    second_args = [encode(op.new_value) if op.kind is OpKind.CAS else None for op in kept]
    consumes: list[int] = []
    produces: list[int] = []
    if not has_append:
        for op, first, second in zip(kept, first_args, second_args, strict=True):
            assert type(first) is int
            needs_state = op.certain and op.kind in (OpKind.READ, OpKind.CAS)
            consumes.append(first if needs_state else -1)
            if op.kind is OpKind.WRITE:
                produces.append(first)
            else:
                produces.append(second if type(second) is int else -1)
    effects: dict[tuple[int, object, object], int] = {}
    effect = [
        -1 if op.kind is OpKind.READ else effects.setdefault((int(op.kind), first, second), len(effects))
        for op, first, second in zip(kept, first_args, second_args, strict=True)
    ]
    preference = [op.ret if op.ret is not None else _NEVER + op.call for op in kept]
    return _Compiled(
        ops=tuple(kept),
        kinds=[int(op.kind) for op in kept],
        first_args=first_args,
        second_args=second_args,
        rank=rank,
        next_entry=next_entry,
        prev_entry=prev_entry,
        initial_state=initial_state,
        certain_count=certain_count,
        values=values,
        consumes=consumes,
        produces=produces,
        effect=effect,
        preference=preference,
        useful_until=useful_until,
    )


def _resetters_for(
    kinds: list[int], first_args: list[Any], second_args: list[Any], rank: list[int]
) -> list[list[int]]:
    """For a key that appends: per op needing a state, the puts/cas that could lead to it.

    A read of "v1[2][3]" can follow a put of "v1" or "v1[2]" (then appends), or a cas to
    one of those; non-string values only follow an install of that very value.
    """
    installs_by_value: dict[object, list[int]] = {}
    for entry, kind in enumerate(kinds):
        if kind in (_WRITE, _CAS):
            installed = second_args[entry] if kind == _CAS else first_args[entry]
            installs_by_value.setdefault(installed, []).append(entry)  # in call order
    prefix_lengths = sorted({len(value) for value in installs_by_value if type(value) is str})
    resetters_for: list[list[int]] = [[] for _ in kinds]
    for entry, kind in enumerate(kinds):
        if not (kind == _READ or (kind == _CAS and rank[entry] >= 0)):
            continue
        needed = first_args[entry]
        if type(needed) is not str:
            resetters_for[entry] = installs_by_value.get(needed, [])
            continue
        found: list[int] = []
        for length in prefix_lengths:
            if length > len(needed):
                break
            found.extend(installs_by_value.get(needed[:length], ()))
        resetters_for[entry] = sorted(found)
    return resetters_for


# (entry, state before it, window_base, window, indeterminate_set, choices, next choice):
# enough to undo the step and carry on with the configuration's remaining choices.
_Frame = tuple[int, object, int, int, int, list[int], int]


@dataclass(frozen=True, slots=True)
class _SearchOutcome:
    verdict: Verdict
    configurations: int
    # NOT_LINEARIZABLE: the longest linearized path, in order; LINEARIZABLE: the linearization found
    # (the indeterminate ops it left out are not in it).
    best_entries: tuple[int, ...] = ()


def _search(
    compiled: _Compiled, deadline: float | None, max_configurations: int | None = None
) -> _SearchOutcome:
    """Porcupine's checkSingle over `compiled`, with the reductions below.

    At each configuration the ops that could go next are those invoked before the first
    return entry still in the list; of these the search tries, in order of return
    (earliest first, indeterminate ops last), only the *choices* that survive:

    * Forced reads: if one of them is a read of the current state, it is the only choice.
      Safe: in any linearization of the rest, moving that read to the front keeps
      real-time order (nothing left returned before it was invoked) and changes no state.
    * Same-effect ops: of the ops with the same effect (say, two writes of 3), only the
      one returning first is a choice: a linearization that starts with another one stays
      valid with the two swapped, since their state changes are identical and the one
      returning first fits wherever the other did.
    * Doomed steps: a step that moves the state away from a value x is not taken when some
      unlinearized :ok op needs x (a read of x, a cas from x) and no unlinearized op that
      installs x (a write of x, a cas to x) was invoked before that op returned: nothing
      could restore x in time. Per value, the readers are kept sorted by return and the
      installers by call, each with a pointer to the first one not linearized.
    * Unreachable reads, for keys that append: appends only extend the state, so when an
      op that could go next reads (or, :ok, cas-expects) a value that does not start with
      the state, some put or cas installing a prefix of that value must have been invoked
      before that op returned and not be linearized yet; if none is, nothing is tried. The
      same holds for reads invoked later, so the next `LOOKAHEAD_READS` are checked too.
    * Spent indeterminate ops: an indeterminate op is not tried once every op that could
      observe what it installs has returned before the earliest return left (so is
      linearized): if a linearization used it, dropping it would leave one without it.
    * Unobservable states, for keys that append: when an :ok put must be linearized before
      any op that could look at the state (every read or cas invoked before that put
      returned expects a value not starting with the state), the state is replaced by a
      marker. Appends keep the marker, reads and cas never match it and puts replace it, so
      the orders of appends that a put will wipe out anyway collapse into one configuration.
    * Indeterminate-op dominance: a configuration that failed also fails with more
      indeterminate ops spent (same :ok ops, same state), since those ops are optional;
      failed ones are remembered per (:ok ops, state) with their indeterminate-op sets,
      keeping only the minimal sets so that the lists stay short.

    Without them, histories with tens of concurrent clients writing a handful of values
    make the search try every order of the writes around each read. Trying the earliest
    return first (rather than Porcupine's earliest call) finds linearizations with less
    backtracking on such histories.
    """
    size = len(compiled.ops)
    remaining = compiled.certain_count
    if remaining == 0:
        return _SearchOutcome(Verdict.LINEARIZABLE, 0)
    kinds = compiled.kinds
    first_args = compiled.first_args
    second_args = compiled.second_args
    rank = compiled.rank
    next_entry = compiled.next_entry[:]
    prev_entry = compiled.prev_entry[:]
    head = 2 * size
    tail = head + 1
    effect = compiled.effect
    preference = compiled.preference
    by_preference = preference.__getitem__
    calls = [op.call for op in compiled.ops]
    by_preference_order = sorted(range(size), key=by_preference)
    linearized = bytearray(size)
    useful_until = compiled.useful_until

    # :ok ops by return, and the first one not linearized: its return is the earliest left.
    by_return = [entry for entry in by_preference_order if rank[entry] >= 0]
    return_slot = [-1] * size
    for slot, entry in enumerate(by_return):
        return_slot[entry] = slot
    first_return_slot = 0

    consumes = compiled.consumes
    produces = compiled.produces
    tracks_values = bool(consumes)
    value_count = len(compiled.values)
    readers_of: list[list[int]] = [[] for _ in range(value_count)]  # sorted by return
    installers_of: list[list[int]] = [[] for _ in range(value_count)]  # sorted by call
    reader_slot = [-1] * size
    installer_slot = [-1] * size
    if tracks_values:
        for entry in by_preference_order:
            if consumes[entry] >= 0:
                reader_slot[entry] = len(readers_of[consumes[entry]])
                readers_of[consumes[entry]].append(entry)
        for entry in range(size):
            if produces[entry] >= 0:
                installer_slot[entry] = len(installers_of[produces[entry]])
                installers_of[produces[entry]].append(entry)
    # Where the key appends: for each op that needs a state (read, :ok cas), the ops that
    # could reset the state to something it can grow into (puts and cas installing a prefix
    # of the needed value), in call order.
    checks_prefixes = not tracks_values and _APPEND in kinds
    resetters_for = _resetters_for(kinds, first_args, second_args, rank) if checks_prefixes else []

    # :ok puts by return, and the first one not linearized: a put that must happen soon.
    puts_by_return = [
        entry
        for entry in by_preference_order
        if checks_prefixes and kinds[entry] == _WRITE and rank[entry] >= 0
    ]
    put_slot = [-1] * size
    for slot, entry in enumerate(puts_by_return):
        put_slot[entry] = slot
    first_put_slot = 0

    def cannot_reach(reader: int) -> bool:
        """No put or cas left that could lead to what `reader` needs before it returns."""
        read_return = preference[reader]
        for resetter in resetters_for[reader]:
            if calls[resetter] > read_return:
                return True
            if not linearized[resetter]:
                return False
        return True

    first_reader = [0] * value_count  # every reader of the value before this slot is linearized
    first_installer = [0] * value_count

    monotonic = time.monotonic
    clock_countdown = CLOCK_CHECK_INTERVAL
    state = compiled.initial_state
    window_base = 0  # every :ok op ranked below this is linearized
    window = 0  # bit i: the :ok op ranked window_base + i is linearized
    indeterminate_set = 0  # bit i: the indeterminate op ranked i is linearized
    cache: set[tuple[int, int, int, object]] = set()
    # Indeterminate-op sets with which a (window_base, window, state) failed: having spent
    # a superset of one of them cannot do better, as indeterminate ops are optional.
    has_indeterminate = size > compiled.certain_count
    failed_with: dict[tuple[int, int, object], list[int]] = {}
    stack: list[_Frame] = []
    # The longest path so far; `shared` is how much of it the stack still has in common.
    best: list[_Frame] = []
    shared = 0

    choices: list[int] = []
    next_choice = 0
    node_start = True
    while True:
        if node_start:
            # A new configuration: find its choices.
            node_start = False
            representatives: dict[int, int] = {}  # effect id -> the op of that effect to try
            while linearized[by_return[first_return_slot]]:
                first_return_slot += 1  # some :ok op is pending, or the search would be over
            first_return = preference[by_return[first_return_slot]]
            entry = next_entry[head]
            if not checks_prefixes:
                while entry < size:
                    if kinds[entry] == _READ:
                        if first_args[entry] == state:
                            break
                    elif useful_until[entry] >= first_return:
                        group = effect[entry]
                        current = representatives.get(group)
                        if current is None or preference[entry] < preference[current]:
                            representatives[group] = entry
                    entry = next_entry[entry]
                unreachable = False
            else:
                if type(state) is str:
                    # Will a put overwrite the state before anything can look at it?
                    while first_put_slot < len(puts_by_return) and linearized[puts_by_return[first_put_slot]]:
                        first_put_slot += 1
                    if first_put_slot < len(puts_by_return):
                        reset_by = preference[puts_by_return[first_put_slot]]
                        probe = entry
                        steps_ahead = 0
                        while probe != tail:
                            if probe < size:
                                if calls[probe] > reset_by:
                                    state = _UNOBSERVABLE
                                    break
                                kind = kinds[probe]
                                if kind in (_READ, _CAS):
                                    needed = first_args[probe]
                                    if type(needed) is str and needed.startswith(state):
                                        break
                            steps_ahead += 1
                            if steps_ahead > UNOBSERVABLE_SCAN_LIMIT:
                                break
                            probe = next_entry[probe]
                # Appends only extend the state: a read (or :ok cas) of a value that does not
                # start with it needs a put or cas of a prefix of that value, invoked before
                # the read returned.
                unreachable = False
                while entry < size:
                    kind = kinds[entry]
                    if kind == _READ or (kind == _CAS and rank[entry] >= 0):
                        needed = first_args[entry]
                        if needed == state:
                            if kind == _READ:
                                break
                        elif not (type(state) is str and type(needed) is str and needed.startswith(state)):
                            unreachable = cannot_reach(entry)
                            if unreachable:
                                break
                    if kind != _READ and useful_until[entry] >= first_return:
                        group = effect[entry]
                        current = representatives.get(group)
                        if current is None or preference[entry] < preference[current]:
                            representatives[group] = entry
                    entry = next_entry[entry]
                if entry >= size and not unreachable:
                    # The rule binds every read still to come, not only those that could go
                    # next: check the next few reads invoked later too.
                    ahead = entry
                    reads_ahead = steps_ahead = 0
                    while ahead != tail and reads_ahead < LOOKAHEAD_READS and steps_ahead < LOOKAHEAD_STEPS:
                        steps_ahead += 1
                        if ahead < size and kinds[ahead] == _READ:
                            reads_ahead += 1
                            needed = first_args[ahead]
                            if not (
                                needed == state
                                or (type(state) is str and type(needed) is str and needed.startswith(state))
                            ) and cannot_reach(ahead):
                                unreachable = True
                                break
                        ahead = next_entry[ahead]
            if unreachable:
                choices = []
            elif entry < size:
                choices = [entry]
            else:
                choices = sorted(representatives.values(), key=by_preference)
            next_choice = 0
        if next_choice < len(choices):
            entry = choices[next_choice]
            next_choice += 1
            kind = kinds[entry]
            if kind == _READ:
                new_state = state
            elif kind == _WRITE:
                new_state = first_args[entry]
            elif kind == _CAS:
                if state != first_args[entry]:
                    continue
                new_state = second_args[entry]
            elif type(state) is str:  # append
                new_state = state + first_args[entry]
            elif state is _UNOBSERVABLE:
                new_state = state  # still overwritten before anyone looks
            else:
                continue  # appending to a value that is not a string
            if tracks_values and new_state != state:
                # Leaving value `state`: is it still needed, with no way to restore it in time?
                readers = readers_of[state]
                slot = first_reader[state]
                while slot < len(readers) and linearized[readers[slot]]:
                    slot += 1
                first_reader[state] = slot
                if slot < len(readers) and readers[slot] == entry:
                    slot += 1  # this op (a cas from `state`) is its own reader
                    while slot < len(readers) and linearized[readers[slot]]:
                        slot += 1
                if slot < len(readers):
                    installers = installers_of[state]
                    other = first_installer[state]
                    while other < len(installers) and linearized[installers[other]]:
                        other += 1
                    first_installer[state] = other
                    if other == len(installers) or calls[installers[other]] > preference[readers[slot]]:
                        continue
            position = rank[entry]
            if position >= 0:
                new_window = window | (1 << (position - window_base))
                new_base = window_base
                if position == window_base:
                    # Slide the window past the run of linearized ops at its bottom.
                    run = (new_window ^ (new_window + 1)).bit_length() - 1
                    new_base += run
                    new_window >>= run
                new_indeterminate = indeterminate_set
            else:
                new_window = window
                new_base = window_base
                new_indeterminate = indeterminate_set | (1 << ~position)
            configuration = (new_base, new_window, new_indeterminate, new_state)
            if configuration in cache:
                continue
            if has_indeterminate:
                failed = failed_with.get((new_base, new_window, new_state))
                if failed and any(earlier & new_indeterminate == earlier for earlier in failed):
                    continue  # the same place failed with fewer indeterminate ops spent
            cache.add(configuration)
            stack.append((entry, state, window_base, window, indeterminate_set, choices, next_choice))
            state = new_state
            window_base = new_base
            window = new_window
            indeterminate_set = new_indeterminate
            linearized[entry] = 1
            # Lift the call entry and, for an :ok op, its return entry.
            after = next_entry[entry]
            before = prev_entry[entry]
            next_entry[before] = after
            prev_entry[after] = before
            if position >= 0:
                returned = entry + size
                after = next_entry[returned]
                before = prev_entry[returned]
                next_entry[before] = after
                prev_entry[after] = before
                remaining -= 1
                if not remaining:
                    return _SearchOutcome(
                        Verdict.LINEARIZABLE, len(cache), best_entries=tuple(step[0] for step in stack)
                    )
            depth = len(stack)
            if depth > len(best):
                del best[shared:]
                best.extend(stack[shared:])
                shared = depth
            clock_countdown -= 1
            if not clock_countdown:
                clock_countdown = CLOCK_CHECK_INTERVAL
                if (deadline is not None and monotonic() >= deadline) or (
                    max_configurations is not None and len(cache) > max_configurations
                ):
                    return _SearchOutcome(Verdict.UNKNOWN, len(cache))
            node_start = True
            continue
        # No choice left here: undo the last step and try that configuration's next choice.
        if not stack:
            break
        if has_indeterminate:
            failed = failed_with.get((window_base, window, state))
            if failed is None:
                failed_with[window_base, window, state] = [indeterminate_set]
            else:
                # Keep only the minimal sets: a superset of this one would be pruned anyway.
                failed[:] = [other for other in failed if other & indeterminate_set != indeterminate_set]
                failed.append(indeterminate_set)
        entry, state, window_base, window, indeterminate_set, choices, next_choice = stack.pop()
        shared = min(shared, len(stack))
        linearized[entry] = 0
        slot = return_slot[entry]
        if 0 <= slot < first_return_slot:
            first_return_slot = slot
        slot = put_slot[entry]
        if 0 <= slot < first_put_slot:
            first_put_slot = slot
        if tracks_values:
            slot = reader_slot[entry]
            if 0 <= slot < first_reader[consumes[entry]]:
                first_reader[consumes[entry]] = slot
            slot = installer_slot[entry]
            if 0 <= slot < first_installer[produces[entry]]:
                first_installer[produces[entry]] = slot
        if rank[entry] >= 0:
            returned = entry + size
            next_entry[prev_entry[returned]] = returned
            prev_entry[next_entry[returned]] = returned
            remaining += 1
        next_entry[prev_entry[entry]] = entry
        prev_entry[next_entry[entry]] = entry

    return _SearchOutcome(Verdict.NOT_LINEARIZABLE, len(cache), best_entries=tuple(step[0] for step in best))


def _describe(op: ModelOp) -> str:
    """The op as Knossos shows it (its completion, or its invocation if it has none), and where."""
    operation = op.operation
    shown = operation.completion or operation.invoke
    places = []
    if operation.invoke.line is not None:
        places.append(f"invoked line {operation.invoke.line}")
    else:
        places.append(f"invoked index {operation.invoke.index}")
    if operation.completion is not None:
        completion = operation.completion
        placed = f"line {completion.line}" if completion.line is not None else f"index {completion.index}"
        places.append(f"completed {placed}")
    if not op.certain:
        places.append("indeterminate")
    return f"{shown.to_edn()} ({', '.join(places)})"


def _subject(model: Model, key: EdnValue, keyed: bool) -> str:
    return f"key {dumps(key)}" if keyed else f"the {model.subject}"


def _extend(
    ops: tuple[ModelOp, ...], path: list[int], state: EdnValue
) -> tuple[list[int], list[EdnValue], list[int]]:
    """Extend a linearized path greedily while some op can take effect.

    The search does not take steps it can tell lead nowhere (see `_search`), so its longest
    path can stop before the op that actually breaks; continuing with plain model steps reaches it, and
    the result is still a linearizable prefix. Reads go first, then :ok ops by return, and
    indeterminate ops only when nothing else applies. Returns the added entries, the state
    after each, and the :ok ops that could have come next but cannot take effect.
    """
    done = set(path)
    pending = [entry for entry in range(len(ops)) if entry not in done]  # in call order
    returns = [(ops[entry].ret or 0, entry) for entry in pending if ops[entry].certain]
    heapq.heapify(returns)
    added: list[int] = []
    states: list[EdnValue] = []
    while returns and len(added) < EXTENSION_LIMIT:
        if returns[0][1] in done:
            heapq.heappop(returns)
            continue
        first_return = returns[0][0]
        candidates = []
        for entry in pending:
            if ops[entry].call > first_return:
                break
            candidates.append(entry)
        order = sorted(
            candidates,
            key=lambda entry: (
                ops[entry].kind is not OpKind.READ,
                not ops[entry].certain,
                ops[entry].ret or ops[entry].call,
            ),
        )
        for entry in order:
            applies, new_state = apply(ops[entry], state)
            if applies:
                break
        else:
            return added, states, [entry for entry in candidates if ops[entry].certain]
        state = new_state
        done.add(entry)
        pending.remove(entry)
        added.append(entry)
        states.append(state)
    return added, states, []


def _violation(
    *,
    model: Model,
    compiled: _Compiled,
    outcome: _SearchOutcome,
    key: EdnValue,
    keyed: bool,
    ops_checked: int,
) -> KeyResult:
    ops = compiled.ops
    entries = list(outcome.best_entries)
    # Replay the path with the reference model: the search's own states are interned, and
    # may be the unobservable marker (see `_search`).
    states: list[EdnValue] = []
    state = model.initial
    for entry in entries:
        applies, state = apply(ops[entry], state)
        assert applies, "the search's path is linearizable"
        states.append(state)
    added, added_states, stuck_entries = _extend(ops, entries, states[-1] if states else model.initial)
    entries += added
    states += added_states
    prefix = tuple(
        LinearizedStep(ops[entry].operation, state) for entry, state in zip(entries, states, strict=True)
    )
    stuck_state = states[-1] if states else model.initial
    stuck = tuple(
        StuckOp(ops[entry].operation, why_not(model, ops[entry], stuck_state)) for entry in stuck_entries
    )
    subject = _subject(model, key, keyed)
    holder = "it" if keyed else "the " + model.subject
    lines = [
        f"{subject} is not linearizable: after the longest linearizable prefix found ({len(prefix)} ops), "
        f"{holder} held {dumps(stuck_state)}, and no op that must come next can take effect:"
    ]
    lines.extend(
        f"  - {_describe(ops[entry])}: {stuck_op.reason}"
        for entry, stuck_op in zip(stuck_entries, stuck, strict=True)
    )
    if not stuck:
        lines.append(f"  (the explanation stops after extending the search's path by {EXTENSION_LIMIT} ops)")
    return _not_linearizable(
        model=model,
        ops=ops,
        key=key,
        ops_checked=ops_checked,
        configurations=outcome.configurations,
        prefix=prefix,
        entries=entries,
        states=states,
        stuck=stuck,
        lines=lines,
        prefix_title="longest linearizable prefix",
        when_empty="no op can be linearized first",
    )


def _not_linearizable(
    *,
    model: Model,
    ops: tuple[ModelOp, ...],
    key: EdnValue,
    ops_checked: int,
    configurations: int,
    prefix: tuple[LinearizedStep, ...],
    entries: list[int],
    states: list[EdnValue],
    stuck: tuple[StuckOp, ...],
    lines: list[str],
    prefix_title: str,
    when_empty: str,
) -> KeyResult:
    """A violation's result: `lines` (the explanation's head) with the prefix's last steps after them."""
    if prefix:
        lines += _prefix_lines(prefix_title, ops, entries, states)
    else:
        lines.append(f"  ({when_empty}, from the initial state {dumps(model.initial)})")
    return KeyResult(
        key=key,
        verdict=Verdict.NOT_LINEARIZABLE,
        ops_checked=ops_checked,
        ops_searched=len(ops),
        configurations=configurations,
        longest_prefix=prefix,
        stuck_state=states[-1] if states else model.initial,
        stuck_ops=stuck,
        explanation="\n".join(lines),
    )


def _prefix_lines(
    title: str, ops: tuple[ModelOp, ...], entries: list[int], states: list[EdnValue]
) -> list[str]:
    """The last `EXPLANATION_PREFIX_STEPS` steps of a linearized path, each with the state after it."""
    shown = min(len(entries), EXPLANATION_PREFIX_STEPS)
    hidden = f" (last {shown} of {len(entries)})" if shown < len(entries) else ""
    return [f"  {title}{hidden}, with the state after each op:"] + [
        f"    {number + 1}. {_describe(ops[entries[number]])} => {dumps(states[number])}"
        for number in range(len(entries) - shown, len(entries))
    ]


def _find_stale_read(compiled: _Compiled) -> tuple[int, int | None] | None:
    """A read (or :ok cas) that no linearization can satisfy, found without searching.

    For a key without appends: an op needing value x, and an :ok write u of another value
    that was invoked after every op installing x (invoked before the reader returned) had
    returned, and that returned before the reader was invoked. Every linearization puts
    those installers before u and u before the reader, so the reader sees u's value or a
    later one, never x. Also a reader of a value nothing installs in time. Returns
    (reader, u) or (reader, None), the earliest-returning such reader; None if there is
    none. This catches stale reads at once, where the search would have to rule out every
    order of the ops before them first.
    """
    if not compiled.consumes:
        return None
    ops = compiled.ops
    size = len(ops)
    consumes = compiled.consumes
    produces = compiled.produces
    # Per value: installers in call order, with the running maximum of their returns (the
    # initial value counts as installed by an op that returned before everything).
    install_calls: dict[int, list[int]] = {}
    install_max_returns: dict[int, list[int]] = {}
    for entry in range(size):
        value_id = produces[entry]
        if value_id < 0:
            continue
        calls = install_calls.setdefault(value_id, [])
        returns = install_max_returns.setdefault(value_id, [])
        ret = ops[entry].ret
        calls.append(ops[entry].call)
        returns.append(max(returns[-1] if returns else -1, _NEVER if ret is None else ret))
    initial = compiled.initial_state
    writes = sorted(
        (entry for entry in range(size) if ops[entry].certain and ops[entry].kind is OpKind.WRITE),
        key=lambda entry: ops[entry].ret or 0,
    )
    readers = sorted(
        (entry for entry in range(size) if consumes[entry] >= 0), key=lambda entry: ops[entry].call
    )
    # Among the :ok writes returned so far: the latest-invoked one, and the latest-invoked
    # one writing a different value.
    latest: int | None = None
    latest_other: int | None = None
    next_write = 0
    found: tuple[int, int | None] | None = None
    for reader in readers:
        call = ops[reader].call
        ret = ops[reader].ret or 0
        while next_write < len(writes) and (ops[writes[next_write]].ret or 0) < call:
            write = writes[next_write]
            next_write += 1
            if latest is None or ops[write].call > ops[latest].call:
                if latest is not None and produces[latest] != produces[write]:
                    latest_other = latest
                latest = write
            elif produces[write] != produces[latest] and (
                latest_other is None or ops[write].call > ops[latest_other].call
            ):
                latest_other = write
        needed = consumes[reader]
        # Installers invoked before the reader returned, and the latest return among them.
        installed_by = bisect.bisect_left(install_calls.get(needed, []), ret)
        last_installed: int | None = None  # None: nothing installs the value in time
        if installed_by:
            last_installed = install_max_returns[needed][installed_by - 1]
        elif needed == initial:
            last_installed = -1  # installed before everything
        overwriter = latest if latest is not None and produces[latest] != needed else latest_other
        if last_installed is None:
            stuck: tuple[int, int | None] = (reader, None)
        elif overwriter is not None and ops[overwriter].call > last_installed:
            stuck = (reader, overwriter)
        else:
            continue
        if found is None or ret < (ops[found[0]].ret or 0):
            found = stuck
    return found


def _cut(ops: tuple[ModelOp, ...], until: int, leave_out: int | None = None) -> tuple[ModelOp, ...]:
    """The key's history as it stood at history index `until`.

    Ops invoked after it are gone; :ok ops that had not returned by then are indeterminate (they
    may or may not have taken effect yet), and reads among them are gone (they constrain
    nothing). `leave_out` drops one more op.
    """
    kept: list[ModelOp] = []
    for entry, op in enumerate(ops):  # in call order
        if op.call > until:
            break
        if entry == leave_out:
            continue
        if op.ret is not None and op.ret <= until:
            kept.append(op)
        elif op.kind is not OpKind.READ:
            kept.append(replace(op, certain=False) if op.certain else op)
    return tuple(kept)


def _first_violation(
    *,
    model: Model,
    compiled: _Compiled,
    known_bad: int | None,
    deadline: float | None,
    budget: int,
    key: EdnValue,
    keyed: bool,
    ops_checked: int,
) -> KeyResult | None:
    """The violation shown as the first op whose return the history cannot explain.

    The history cut at an op's return (`_cut`) stays not linearizable at every later return:
    a linearization of the later cut, stopped before its first op invoked after the earlier
    return, linearizes the earlier one. So a bisection over the :ok ops' returns finds the
    first op X whose return makes it not linearizable, searching each cut within `budget`.
    `known_bad` is an op whose cut is already known not to be linearizable (a stale read), or
    None for the whole history. The result is the cut just before X returned, without X,
    linearized (every op in it was invoked before X returned, and every op that returned
    before X was invoked is in it, so X could come next), and X stuck after it.

    Unlike the search's longest path, this names the op that broke the history: that path
    can end at a wrong turn (two concurrent appends ordered the wrong way round, say) that
    gets stuck on an op that is fine. None when a search runs out of budget or time.
    """
    ops = compiled.ops
    if known_bad is not None:
        # Most often the stale read is the first op the history cannot explain: one search shows it.
        shown = _stuck_after_cut(
            model=model,
            ops=ops,
            culprit=known_bad,
            deadline=deadline,
            budget=budget,
            key=key,
            keyed=keyed,
            ops_checked=ops_checked,
        )
        if shown is not None:
            return shown
    by_return = sorted((op.ret, entry) for entry, op in enumerate(ops) if op.ret is not None)
    high = len(by_return) - 1
    if known_bad is not None:
        known_return = ops[known_bad].ret
        assert known_return is not None, "a stale read returned"
        high = by_return.index((known_return, known_bad))
    low = 0
    while low < high:  # the cut at by_return[high] is not linearizable
        middle = (low + high) // 2
        outcome = _search(_compile(model, _cut(ops, by_return[middle][0])), deadline, budget)
        if outcome.verdict is Verdict.UNKNOWN:
            return None
        if outcome.verdict is Verdict.NOT_LINEARIZABLE:
            high = middle
        else:
            low = middle + 1
    return _stuck_after_cut(
        model=model,
        ops=ops,
        culprit=by_return[high][1],
        deadline=deadline,
        budget=budget,
        key=key,
        keyed=keyed,
        ops_checked=ops_checked,
    )


def _stuck_after_cut(
    *,
    model: Model,
    ops: tuple[ModelOp, ...],
    culprit: int,
    deadline: float | None,
    budget: int,
    key: EdnValue,
    keyed: bool,
    ops_checked: int,
) -> KeyResult | None:
    """`culprit` stuck after a linearization of the cut just before it returned, without it.

    None when that cut is not linearizable (within `budget`) or `culprit` can take effect
    after the linearization found.
    """
    returned = ops[culprit].ret
    assert returned is not None, "the op returned"
    before = _cut(ops, returned - 1, leave_out=culprit)
    searched = _compile(model, before)  # may drop indeterminate ops nothing can observe
    outcome = _search(searched, deadline, budget)
    if outcome.verdict is not Verdict.LINEARIZABLE:
        return None
    entry_of = {op.operation: entry for entry, op in enumerate(ops)}
    entries = [entry_of[searched.ops[entry].operation] for entry in outcome.best_entries]
    states: list[EdnValue] = []
    state = model.initial
    for entry in entries:
        applies, state = apply(ops[entry], state)
        assert applies, "the search's linearization is linearizable"
        states.append(state)
    if apply(ops[culprit], state)[0]:
        return None
    prefix = tuple(
        LinearizedStep(ops[entry].operation, after) for entry, after in zip(entries, states, strict=True)
    )
    reason = why_not(model, ops[culprit], state)
    subject = _subject(model, key, keyed)
    holder = "it" if keyed else "the " + model.subject
    lines = [
        f"{subject} is not linearizable: its history is until the op below returned, and no order of the "
        "ops invoked before then lets that op take effect as it returned. After the linearizable prefix "
        f"shown ({len(prefix)} ops), {holder} held {dumps(state)}, and the op could come next:",
        f"  - {_describe(ops[culprit])}: {reason}",
    ]
    return _not_linearizable(
        model=model,
        ops=ops,
        key=key,
        ops_checked=ops_checked,
        configurations=outcome.configurations,
        prefix=prefix,
        entries=entries,
        states=states,
        stuck=(StuckOp(ops[culprit].operation, reason),),
        lines=lines,
        prefix_title="linearizable prefix",
        when_empty="nothing comes before it",
    )


def _stale_violation(
    *,
    model: Model,
    compiled: _Compiled,
    stale: tuple[int, int | None],
    key: EdnValue,
    keyed: bool,
    ops_checked: int,
) -> KeyResult:
    ops = compiled.ops
    reader, overwriter = stale
    needed = compiled.decode(compiled.consumes[reader])
    subject = _subject(model, key, keyed)
    what = "read" if ops[reader].kind is OpKind.READ else "cas expected"
    if overwriter is None:
        stuck_state = model.initial
        prefix: tuple[LinearizedStep, ...] = ()
        reason = f"{what} {dumps(needed)}, which no op invoked before it returned installs"
    else:
        stuck_state = compiled.decode(compiled.produces[overwriter])
        prefix = (LinearizedStep(ops[overwriter].operation, stuck_state),)
        reason = (
            f"{what} {dumps(needed)}, but the {model.subject} held {dumps(stuck_state)}: "
            f"{_describe(ops[overwriter])} wrote it after every op installing {dumps(needed)} "
            "had returned, and returned before this op was invoked"
        )
    lines = [f"{subject} is not linearizable: in every order of its ops, this op sees the wrong value:"]
    lines.append(f"  - {_describe(ops[reader])}: {reason}")
    return KeyResult(
        key=key,
        verdict=Verdict.NOT_LINEARIZABLE,
        ops_checked=ops_checked,
        ops_searched=len(ops),
        configurations=0,
        longest_prefix=prefix,
        stuck_state=stuck_state,
        stuck_ops=(StuckOp(ops[reader].operation, reason),),
        explanation="\n".join(lines),
    )


def check_history(history: History, model: str = "register", timeout_s: float | None = None) -> CheckResult:
    """Check `history` for linearizability against `model` ("register" or "kv").

    Keys are checked one by one; with `timeout_s`, keys still unfinished when the budget
    runs out are UNKNOWN. Overall: NOT_LINEARIZABLE if any key is, else UNKNOWN if any
    key is, else LINEARIZABLE. Raises `HistoryError` for input the model cannot interpret
    and `ValueError` for an unknown model name.
    """
    started = time.perf_counter()
    spec = get_model(model)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    interpretation = interpret(spec, history.operations())
    keyed = spec.key_in_value or any(key is not None for key in interpretation.keys.values())
    results: list[KeyResult] = []
    for identity, ops in interpretation.ops_by_key.items():
        key = interpretation.keys[identity]
        ops_checked = interpretation.considered_by_key[identity]
        if deadline is not None and time.monotonic() >= deadline:
            results.append(
                KeyResult(
                    key,
                    Verdict.UNKNOWN,
                    ops_checked,
                    len(ops),
                    0,
                    explanation="not checked: time budget spent",
                )
            )
            continue
        compiled = _compile(spec, ops)
        stale = _find_stale_read(compiled)
        # With a violation found up front, the search only runs to explain it, if that is cheap.
        budget = (
            None if stale is None else EXPLANATION_SEARCH_BUDGET + EXPLANATION_SEARCH_BUDGET_PER_OP * len(ops)
        )
        if stale is not None and budget:  # a budget of 0: no search to explain it
            shown = _first_violation(
                model=spec,
                compiled=compiled,
                known_bad=stale[0],
                deadline=deadline,
                budget=budget,
                key=key,
                keyed=keyed,
                ops_checked=ops_checked,
            )
            if shown is not None:
                results.append(shown)
                continue
        outcome = _search(compiled, deadline, budget)
        if stale is not None and outcome.verdict is not Verdict.NOT_LINEARIZABLE:
            results.append(
                _stale_violation(
                    model=spec, compiled=compiled, stale=stale, key=key, keyed=keyed, ops_checked=ops_checked
                )
            )
            continue
        if outcome.verdict is Verdict.NOT_LINEARIZABLE:
            shown = _first_violation(
                model=spec,
                compiled=compiled,
                known_bad=None,
                deadline=deadline,
                budget=max(
                    EXPLANATION_SEARCH_BUDGET + EXPLANATION_SEARCH_BUDGET_PER_OP * len(ops),
                    EXPLANATION_SEARCH_FACTOR * outcome.configurations,
                ),
                key=key,
                keyed=keyed,
                ops_checked=ops_checked,
            )
            results.append(
                shown
                or _violation(
                    model=spec,
                    compiled=compiled,
                    outcome=outcome,
                    key=key,
                    keyed=keyed,
                    ops_checked=ops_checked,
                )
            )
            continue
        note = "" if outcome.verdict is Verdict.LINEARIZABLE else "time budget spent during the search"
        results.append(
            KeyResult(
                key, outcome.verdict, ops_checked, len(compiled.ops), outcome.configurations, explanation=note
            )
        )
    verdicts = {result.verdict for result in results}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    ops_checked = sum(interpretation.considered_by_key.values())
    elapsed = time.perf_counter() - started
    return CheckResult(
        verdict=verdict,
        model=spec.name,
        per_key=tuple(results),
        explanation=_summary(
            model=spec,
            verdict=verdict,
            results=results,
            ops_checked=ops_checked,
            keyed=keyed,
            timeout_s=timeout_s,
        ),
        ops_checked=ops_checked,
        ops_skipped=interpretation.skipped,
        elapsed_s=elapsed,
        timeout_s=timeout_s,
    )


def _summary(
    *,
    model: Model,
    verdict: Verdict,
    results: list[KeyResult],
    ops_checked: int,
    keyed: bool,
    timeout_s: float | None,
) -> str:
    scope = f"{ops_checked} operations on {len(results)} key(s)" if keyed else f"{ops_checked} operations"
    if verdict is Verdict.LINEARIZABLE:
        return f"linearizable ({model.name} model): {scope}"
    if verdict is Verdict.UNKNOWN:
        unknown = [result for result in results if result.verdict is Verdict.UNKNOWN]
        which = f"{len(unknown)} of {len(results)} key(s)" if keyed else "the history"
        budget = f"the {timeout_s} s time budget ran out"
        return f"unknown ({model.name} model): {budget} before {which} could be decided"
    violations = [result for result in results if result.verdict is Verdict.NOT_LINEARIZABLE]
    header = f"not linearizable ({model.name} model): {scope}"
    if keyed:
        header += f"; {len(violations)} key(s) violate linearizability"
    return "\n".join([header, *(result.explanation for result in violations)])
