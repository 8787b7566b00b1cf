"""The gateway's settings, read from the environment (`DSCORE_` prefix, `__` between nested names).

    DSCORE_NODES=n1,n2,n3 DSCORE_CLUSTER_ID=prod DSCORE_AUTH_KEY=... \
    DSCORE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 DSCORE_GATEWAY__PORT=8080 dscore-gateway

The names the gateway shares with the nodes (`DSCORE_CLUSTER_ID`, `DSCORE_AUTH_KEY`,
`DSCORE_KAFKA__BOOTSTRAP_SERVERS`) mean the same thing in both, so one ConfigMap and one Secret can feed
a whole deployment; the gateway's own knobs live under `DSCORE_GATEWAY__`. Variables it does not know
(a node's `DSCORE_RAFT__...`) are ignored, so that shared environment does not stop it.

`load_gateway_settings()` turns every validation failure into one `ConfigError` that names the
environment variable, the bad value (never a secret's) and what is expected: a wrong setting stops the
gateway at start. The cluster key is required (the nodes drop every unauthenticated frame, so a gateway
without it could only time out) and is a `SecretStr`: it is never logged, shown or put in an error.

Why the defaults:

- `attempt_timeout_s = 0.5`: a healthy leader answers in milliseconds; waiting longer on a dead one only
  delays failover (the next node's NOT_LEADER hint names the new leader once it is elected, 100-200 ms
  after the old one stopped with the default Raft timing).
- `silence_s = 0.2`: no sooner than the nodes themselves give up on a leader (Raft's default election
  timeout is 100-200 ms), and ten times a loaded leader's p99 here; a dead leader then costs its writes
  about an election, not `attempt_timeout_s` (measured: BENCHMARKS.md, failover).
- `request_timeout_s = 5`: an HTTP request waits through a few elections before the gateway says 503
  (nothing happened) or 504 (the outcome is unknown); well under common client timeouts (30-60 s).
- `session_pool_size = 64`: one registered session per write in flight; REGISTER costs a log entry, so
  the pool grows on demand up to this bound and writes beyond it wait for a free session.
- `max_in_flight = 1024`: requests served at once before new ones get 503 at once instead of queueing.
- `max_body_bytes = 65536`: values travel in one envelope (1 MiB by default on the nodes) with many
  others; 64 KiB keeps a batch of concurrent writes far below that limit.
- `idempotency_ttl_s = 3600`, `idempotency_max_keys = 100_000`: retries come within seconds or minutes;
  an hour covers a client's retry budget with room to spare, and 100k entries of a few hundred bytes each
  stay within tens of MiB.
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dscore.core.codec import MIN_KEY_BYTES, check_key
from dscore.core.errors import ConfigError
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD
from dscore.runtime.protocols import reply_quorum
from dscore.settings import (
    DEFAULT_CLUSTER_ID,
    DEFAULT_PROTOCOL,
    ENV_PREFIX,
    ClusterId,
    PbftSettings,
    ProtocolName,
    check_pbft_members,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: settings whose values never appear in an error, a repr or a log line
SECRET_SETTINGS = frozenset({"auth_key"})
#: `gateway.max_gather_s` with an in-flight limit: at 64 closed-loop clients it took envelopes from ~27 to
#: ~46 requests (BENCHMARKS.md); a wait is also bounded by half the answered envelope's round trip
DEFAULT_MAX_GATHER_S = 0.008


def default_endpoint_id() -> str:
    """`gw-<hostname>`, cut to the characters an inbox topic name allows (a pod's hostname is its name,
    unique among the running gateways)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "localhost"
    return f"gw-{host}"[:63]


class GatewayOptions(BaseModel):
    """The gateway's own knobs: `DSCORE_GATEWAY__<NAME>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the address the HTTP server binds
    host: str = "0.0.0.0"
    #: the HTTP port; 0 picks a free one (uvicorn's "Uvicorn running on http://HOST:PORT" line says which;
    #: the local process stack and tests use it so parallel runs never collide)
    port: int = Field(default=8080, ge=0, le=65535)
    #: the gateway's endpoint id on the transport (its reply inbox); default `gw-<hostname>`. Unique among
    #: running gateways and different from every node id.
    endpoint_id: str = Field(default_factory=default_endpoint_id)
    #: no new attempt starts after this long; an HTTP request is answered (at the latest 503 / 504)
    #: within request_timeout_s + attempt_timeout_s
    request_timeout_s: float = Field(default=5.0, gt=0, le=600)
    #: wait this long for one node's answer before trying the next
    attempt_timeout_s: float = Field(default=0.5, gt=0, le=60)
    #: a node asked something that answered nothing for this long is silent: every attempt waiting on it
    #: ends at once as a timeout and goes on elsewhere, and for as long again it is passed over and hints
    #: naming it are not followed (`dscore_gateway.routing`); 0: off (attempts wait out attempt_timeout_s)
    silence_s: float = Field(default=0.2, ge=0, le=60)
    #: pause after a full round of refusals (an election is under way), so it is not flooded
    retry_backoff_s: float = Field(default=0.02, ge=0, le=5)
    #: the Retry-After of a 503, in whole seconds
    retry_after_s: int = Field(default=1, ge=0, le=3600)
    #: registered sessions at most: writes in flight at once; more writes wait for a free session
    session_pool_size: int = Field(default=64, ge=1, le=100_000)
    #: HTTP requests served at once; beyond it 503 at once
    max_in_flight: int = Field(default=1024, ge=1, le=1_000_000)
    #: largest request body, in bytes (413 beyond)
    max_body_bytes: int = Field(default=65_536, ge=64, le=512 * 1024)
    #: longest key, in UTF-8 bytes (400 beyond)
    max_key_bytes: int = Field(default=1024, ge=1, le=64 * 1024)
    #: Idempotency-Keys remembered at most (the oldest finished ones are forgotten first)
    idempotency_max_keys: int = Field(default=100_000, ge=1, le=10_000_000)
    #: an Idempotency-Key is remembered this long after its request finished
    idempotency_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    #: sessions held for writes whose outcome was unknown (504) under an Idempotency-Key, so a retry can
    #: resume them; beyond it the oldest is let go (its key then answers 504 for good)
    max_pinned_sessions: int = Field(default=1024, ge=0, le=1_000_000)
    #: on SIGTERM, wait at most this long for requests in flight before closing
    drain_timeout_s: float = Field(default=10.0, ge=0, le=600)
    #: when no request succeeded for this long, read a key to keep the leader known (0: never)
    probe_interval_s: float = Field(default=1.0, ge=0, le=3600)
    #: /readyz wants a success (a request or a probe) at least this recent
    ready_success_within_s: float = Field(default=5.0, gt=0, le=3600)
    #: the key the probe reads (a read has no effect; any key will do)
    probe_key: str = Field(default="dscore.gateway.probe", min_length=1, max_length=256)
    #: serve plain `PUT /v1/kv/{key}` on the HTTP protocol itself, below ASGI (`dscore_gateway.http_fast`);
    #: off: every request goes through the ASGI app (the same answers, more CPU per write)
    http_fast_path: bool = True
    #: trust X-Forwarded-For / X-Forwarded-Proto from `forwarded_allow_ips` (uvicorn's proxy headers);
    #: off by default: nothing the gateway answers depends on the client's address or scheme, and the
    #: layer cost CPU on every request
    proxy_headers: bool = False
    #: the proxies trusted with `proxy_headers` (uvicorn's `forwarded_allow_ips`: addresses, networks or *)
    forwarded_allow_ips: str = Field(default="127.0.0.1", min_length=1, max_length=4096)
    #: envelopes of requests one node may have unanswered before the next envelope waits (0: no limit);
    #: default 1, and 0 for PBFT, whose retries go to every replica at once. Under load a leader then gets
    #: fewer, fuller envelopes, each a round of appends, saves and acknowledgements: at 64 clients 1.27x
    #: the writes/s at 0.68x the CPU per write (BENCHMARKS.md); see `ClientEndpoint._send`
    max_envelopes_in_flight: int | None = Field(default=None, ge=0, le=1_000_000)
    #: after a node answers an envelope of several requests, the longest its next envelope waits to gather
    #: the answered clients' next requests (as many as were answered, plus those held); never more than
    #: half that envelope's round trip, and a lone client's envelope never waits. 0: off. Default 0.008,
    #: and 0 without an in-flight limit (PBFT). Closed-loop clients otherwise split into two groups that
    #: take turns through the one envelope in flight (BENCHMARKS.md); the cost is up to that wait for a
    #: request whose envelope gathers for clients that do not come back (open-loop arrivals)
    max_gather_s: float | None = Field(default=None, ge=0, le=1.0, allow_inf_nan=False)
    #: Python logging level of the gateway's loggers
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    @field_validator("endpoint_id")
    @classmethod
    def _check_endpoint_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must be 1-63 characters: letters, digits, '_', '.', '-' (not first)")
        return value

    def silence_after_s(self) -> float:
        """`silence_s`, or 0 (off) when attempts time out first anyway: a default silence at or above an
        `attempt_timeout_s` set lower is moot, not an error (a silence set so is refused)."""
        return self.silence_s if self.silence_s < self.attempt_timeout_s else 0.0

    @model_validator(mode="after")
    def _check_consistency(self) -> GatewayOptions:
        if self.attempt_timeout_s > self.request_timeout_s:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY__ATTEMPT_TIMEOUT_S ({self.attempt_timeout_s}) must not exceed "
                f"{ENV_PREFIX}GATEWAY__REQUEST_TIMEOUT_S ({self.request_timeout_s})"
            )
        if (
            "silence_s" in self.model_fields_set
            and self.silence_s
            and self.silence_s >= self.attempt_timeout_s
        ):
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY__SILENCE_S ({self.silence_s}) must be below "
                f"{ENV_PREFIX}GATEWAY__ATTEMPT_TIMEOUT_S ({self.attempt_timeout_s}) (0: off)"
            )
        if self.idempotency_max_keys < self.max_in_flight:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY__IDEMPOTENCY_MAX_KEYS ({self.idempotency_max_keys}) must be at least "
                f"{ENV_PREFIX}GATEWAY__MAX_IN_FLIGHT ({self.max_in_flight}): keys in progress are never "
                "evicted"
            )
        return self


class KafkaOptions(BaseModel):
    """How the gateway reaches Kafka: `DSCORE_KAFKA__BOOTSTRAP_SERVERS` (the nodes read the same name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: `host:port[,host:port...]`
    bootstrap_servers: str = "127.0.0.1:9092"

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} must be host:port (comma-separated for several)")
        return value


class PbftOptions(BaseModel):
    """What the gateway reads of PBFT's settings (`DSCORE_PBFT__FAULTS_TOLERATED`, the nodes' name): f,
    so that it waits for f + 1 matching replies. The nodes' other PBFT knobs are theirs (ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: f; unset: (n - 1) // 3 of the configured nodes, as on the nodes
    faults_tolerated: int | None = Field(default=None, ge=0, le=1_000)


class GatewaySettings(BaseSettings):
    """Everything the gateway process reads at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    #: the cluster's node ids (comma-separated in the environment): where requests go. Who leads is
    #: learned from the nodes' replies, never configured.
    nodes: Annotated[tuple[str, ...], NoDecode] = ()
    #: names the cluster (Kafka topics are `dscore.<cluster_id>.inbox.<endpoint>`)
    cluster_id: ClusterId = DEFAULT_CLUSTER_ID
    #: the nodes' protocol (`DSCORE_PROTOCOL`, the nodes' name): raft and paxos answer from the leader,
    #: which the gateway learns from replies; with pbft every replica answers and the gateway accepts a
    #: result only once f + 1 replicas sent the same one
    protocol: ProtocolName = DEFAULT_PROTOCOL
    pbft: PbftOptions = Field(default_factory=PbftOptions)
    #: the cluster key (HMAC-SHA256 of every frame); at least 32 bytes of UTF-8
    auth_key: SecretStr | None = None
    kafka: KafkaOptions = Field(default_factory=KafkaOptions)
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)
    #: young-generation GC threshold of the gateway's process (0 keeps CPython's 700), as the nodes'
    #: (`DSCORE_GC_GEN0_THRESHOLD`, `dscore.runtime.gc_tuning`): each request allocates dozens of short-lived
    #: objects, and with tens of requests in flight CPython's default rescans the live ones hundreds of
    #: times a second
    gc_gen0_threshold: int = Field(default=DEFAULT_GC_GEN0_THRESHOLD, ge=0, le=10_000_000)

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list the cluster's node ids, e.g. n1,n2,n3")
        for node in value:
            if not _ID.match(node):
                raise ValueError(f"node id {node!r} must be letters, digits, '_', '.', '-'")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate node ids in {','.join(value)}")
        return value

    @field_validator("auth_key")
    @classmethod
    def _check_auth_key(cls, value: SecretStr | None) -> SecretStr:
        if value is None:
            raise ValueError("is required: the nodes drop every frame not authenticated with the cluster key")
        length = len(value.get_secret_value().encode("utf-8", "surrogatepass"))
        if length < MIN_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes, got {length}")
        return value

    @model_validator(mode="after")
    def _check_endpoint(self) -> GatewaySettings:
        if self.gateway.endpoint_id in self.nodes:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY__ENDPOINT_ID ({self.gateway.endpoint_id!r}) must differ from every "
                "node id"
            )
        if self.protocol == "pbft":
            check_pbft_members(len(self.nodes), PbftSettings(faults_tolerated=self.pbft.faults_tolerated))
            if self.gateway.max_envelopes_in_flight:  # set, and not 0
                raise ValueError(
                    f"{ENV_PREFIX}GATEWAY__MAX_ENVELOPES_IN_FLIGHT ({self.gateway.max_envelopes_in_flight}) "
                    "must be 0 with pbft: its retries go to every replica at once"
                )
        if self.gateway.max_gather_s and not self.envelopes_in_flight():
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY__MAX_GATHER_S ({self.gateway.max_gather_s}) must be 0 without "
                f"{ENV_PREFIX}GATEWAY__MAX_ENVELOPES_IN_FLIGHT (it gathers for the next envelope in flight)"
            )
        return self

    def envelopes_in_flight(self) -> int:
        """`gateway.max_envelopes_in_flight`, or its default: 1 (0 for PBFT)."""
        if self.gateway.max_envelopes_in_flight is not None:
            return self.gateway.max_envelopes_in_flight
        return 0 if self.protocol == "pbft" else 1

    def gather_s(self) -> float:
        """`gateway.max_gather_s`, or its default: 0.008 with an in-flight limit, else 0."""
        if self.gateway.max_gather_s is not None:
            return self.gateway.max_gather_s
        return DEFAULT_MAX_GATHER_S if self.envelopes_in_flight() else 0.0

    def reply_quorum(self) -> int:
        """Matching replies from distinct nodes an answer needs: f + 1 for PBFT, else one."""
        return reply_quorum(self.protocol, len(self.nodes), self.pbft.faults_tolerated)

    def auth_key_bytes(self) -> bytes:
        """The cluster key for `dscore.core.codec`."""
        assert self.auth_key is not None  # required by the validator
        return check_key(self.auth_key.get_secret_value().encode("utf-8", "surrogatepass"))


def _env_name(location: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def load_gateway_settings(**overrides: Any) -> GatewaySettings:
    """Read `GatewaySettings` from the environment (keyword arguments win); raise `ConfigError` naming
    every bad setting by its environment variable."""
    try:
        return GatewaySettings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(part for part in item["loc"] if not isinstance(part, int))
            where = _env_name(location) if location else "settings"
            value = item.get("input")
            hidden = (
                isinstance(value, dict)
                or item["type"] == "extra_forbidden"
                or (bool(location) and location[0] in SECRET_SETTINGS)
            )
            shown = "" if hidden else f" (got {value!r})"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}{shown}")
        raise ConfigError("invalid dscore gateway settings:\n  " + "\n  ".join(problems)) from None
