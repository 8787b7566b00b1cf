"""Transport faults: commands on the cluster's control topic that every node's `FaultyTransport` obeys
(`dscore.transport.faults`).

Each injection publishes one start command (id `<fault id>.<number>`) whose expiry is its end; when the
fault's time is up, or it is stopped, a stop command follows. Nodes drop the rule at the expiry even if
the stop is lost. Targets: `all` (every node applies the rule), `leader` (found by the platform backend
that can see the nodes), `random` (seeded, among `DSCORE_NODES`), or a node id. A partition either cuts
its target off from every other node of `DSCORE_NODES`, or takes `params.groups` as they are.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Protocol

from dscore.core.errors import DscoreError
from dscore.transport.faults import (
    Direction,
    FaultAction,
    FaultCommand,
    FaultKind,
    MemoryControlChannel,
    encode_command,
)
from dscore_chaos.backends.base import Hit, InjectionError, LeaderSource
from dscore_chaos.clock import Clock
from dscore_chaos.model import (
    ALL,
    LEADER,
    RANDOM,
    TRANSPORT_KINDS,
    ChaosKind,
    DelayParams,
    FaultSpec,
    InvalidFaultError,
    OmissionParams,
    PartitionParams,
)
from dscore_chaos.targets import TargetError


class ControlPublisher(Protocol):
    async def start(self) -> None: ...

    async def publish(self, command: FaultCommand) -> int:
        """Publish one command; its position on the channel. Raises a `DscoreError` if it could not."""
        ...

    async def close(self) -> None: ...


class ChannelPublisher:
    """A `ControlPublisher` onto an in-process `MemoryControlChannel` (embedded clusters, tests)."""

    def __init__(self, channel: MemoryControlChannel, *, key: bytes | None) -> None:
        self.channel = channel
        self._key = key
        self.published = 0

    async def start(self) -> None:
        return None

    async def publish(self, command: FaultCommand) -> int:
        self.channel.publish(encode_command(command, key=self._key))
        self.published += 1
        return self.published - 1

    async def close(self) -> None:
        return None


_KINDS = {
    ChaosKind.OMISSION: FaultKind.OMISSION,
    ChaosKind.DELAY: FaultKind.DELAY,
    ChaosKind.PARTITION: FaultKind.PARTITION,
}


class TransportBackend:
    """`omission`, `delay` and `partition` (see the module docstring)."""

    kinds = TRANSPORT_KINDS

    def __init__(
        self,
        publisher: ControlPublisher,
        *,
        nodes: tuple[str, ...],
        rng: random.Random,
        clock: Clock,
        leader: LeaderSource | None = None,
    ) -> None:
        self.publisher = publisher
        self.nodes = nodes
        self._rng = rng
        self._clock = clock
        self._leader = leader

    async def start(self) -> None:
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()

    def check(self, spec: FaultSpec) -> None:
        """Refuse what cannot work whatever the cluster does (the API answers 422)."""
        nodes = self.nodes
        target = spec.target
        params = spec.params
        if target == LEADER and self._leader is None:
            raise InvalidFaultError(
                "target 'leader' needs a backend that can see the nodes (Kubernetes or local processes)"
            )
        needs_nodes = target == RANDOM or (spec.kind is ChaosKind.PARTITION and target != "groups")
        if needs_nodes and not nodes:
            raise InvalidFaultError(f"target {target!r} needs the node ids (DSCORE_NODES)")
        named = [target] if target not in (ALL, LEADER, RANDOM, "groups") else []
        if isinstance(params, PartitionParams) and params.groups is not None:
            named += [n for group in params.groups for n in group]
        unknown = sorted({n for n in named if nodes and n not in nodes})
        if unknown:
            raise InvalidFaultError(f"not nodes of this cluster ({', '.join(nodes)}): {', '.join(unknown)}")

    async def _node(self, target: str) -> str:
        if target == LEADER:
            assert self._leader is not None
            try:
                return await self._leader.leader_node_id()
            except (TargetError, InjectionError) as error:
                raise InjectionError(str(error)) from None
        if target == RANDOM:
            return self._rng.choice(sorted(self.nodes))
        return target

    async def inject(self, spec: FaultSpec, fault_id: str, number: int) -> Hit:
        self.check(spec)
        params = spec.params
        duration = spec.duration_s
        assert duration is not None
        command_id = f"{fault_id}.{number}"
        now = self._clock.now()
        base = FaultCommand(
            command_id,
            FaultAction.START,
            _KINDS[spec.kind],
            issued_at_ms=int(now * 1000),
            expires_at_ms=int((now + duration) * 1000),
        )
        if isinstance(params, PartitionParams):
            if params.groups is not None:
                groups = tuple(tuple(group) for group in params.groups)
            else:
                node = await self._node(spec.target)
                groups = ((node,), tuple(n for n in self.nodes if n != node))
            command = dataclasses.replace(base, direction=Direction.BOTH, groups=groups)
            target = " | ".join(",".join(group) for group in groups)
        else:
            nodes: tuple[str, ...] = () if spec.target == ALL else (await self._node(spec.target),)
            assert isinstance(params, OmissionParams | DelayParams)
            command = dataclasses.replace(base, nodes=nodes, peers=tuple(params.peers))
            if isinstance(params, OmissionParams):
                command = dataclasses.replace(
                    command, direction=Direction(params.direction), drop_probability=params.drop_probability
                )
            else:
                command = dataclasses.replace(command, direction=Direction.SEND, delay_ms=params.delay_ms)
            target = ",".join(nodes) if nodes else ALL
        try:
            offset = await self.publisher.publish(command)
        except DscoreError as error:
            raise InjectionError(f"publishing {command_id}: {error}") from None

        async def stop() -> str:
            try:
                at = await self.publisher.publish(FaultCommand(command_id, FaultAction.STOP))
            except DscoreError as error:
                return f"stop of {command_id} not published ({error}); the nodes end it at its expiry"
            return f"stop of {command_id} published at {at}"

        return Hit(
            target,
            f"{spec.kind.value} command {command_id} published at {offset}, for {duration:g} s",
            end=stop,
        )
