"""The node process's settings: every `dscore.settings.NodeSettings` (cluster-wide and node-local, with
Kafka and Redis) plus what only a process has (its HTTP listener, the insecure switch, logging).

    DSCORE_NODE_ID=n1 DSCORE_PEERS=n2,n3 DSCORE_CLUSTER_ID=prod
    DSCORE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 DSCORE_REDIS__URL=redis://redis-n1:6379/0
    DSCORE_AUTH_KEY=... DSCORE_HTTP__PORT=8080

`load_service_settings()` reads them and adds the rules of a real deployment, each failure naming its
variable: Kafka and Redis addresses are required, and so is the cluster key unless
`DSCORE_INSECURE_NO_AUTH=true` says, explicitly, that this cluster runs without authenticated frames
(secure by default: a forgotten key must not silently open the cluster to anyone who can write to its
topics). PBFT always needs the key: its replicas' pair MAC keys are derived from it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from redis.asyncio.connection import Connection, parse_url

from dscore.core.errors import ConfigError
from dscore.settings import ENV_PREFIX, NodeSettings, load_settings_as

#: the shortest admin token accepted (a 32-character random token is far beyond guessing over HTTP)
MIN_ADMIN_TOKEN_CHARS = 32


class HttpSettings(BaseModel):
    """The node's HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/debug/state` and, when enabled,
    `/admin/*`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the address to listen on; 0.0.0.0 in a container (the default keeps a laptop's node private)
    host: str = "127.0.0.1"
    #: 0 picks a free port (the log line `http listening` tells which)
    port: int = Field(default=8080, ge=0, le=65535)
    #: serve `/admin/*` (membership changes; fault injection: stop and resume consuming the inbox). Off
    #: by default; on, it needs `admin_token`
    admin: bool = False
    #: the bearer token every `/admin/*` request must carry (`Authorization: Bearer <token>`), from a
    #: Secret; at least 32 characters, no whitespace inside. Surrounding whitespace is dropped (a Secret
    #: made with `kubectl create secret --from-file` keeps the file's last newline, and a header cannot
    #: carry it, so such a token could never match). Never logged, never in an error message
    admin_token: SecretStr | None = None

    @field_validator("admin_token", mode="after")
    @classmethod
    def _trimmed(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value().strip()
        if any(char.isspace() for char in value):
            raise ValueError("the admin token must not contain whitespace")
        return SecretStr(value)


class FaultSettings(BaseModel):
    """Transport faults commanded by the chaos injector (services/chaos) on the cluster's control topic
    `dscore.<cluster_id>.control` (`dscore.transport.faults`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: wrap the Kafka transport in `FaultyTransport` and obey authenticated commands from the control
    #: topic. On by default: with no fault in force a frame costs one attribute check each way, and the
    #: idle control reader fetches twice a second. Commands must carry an HMAC under the cluster key, so
    #: a cluster without a key (`DSCORE_INSECURE_NO_AUTH`) never reads the topic
    enabled: bool = True


class ServiceSettings(NodeSettings):
    """Everything a `dscore-node` process reads at start (see the module docstring)."""

    http: HttpSettings = Field(default_factory=HttpSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)
    #: run without `DSCORE_AUTH_KEY` (frames unauthenticated): only for throwaway clusters
    insecure_no_auth: bool = False
    #: a leader stopping on SIGTERM waits at most this long for another node to take over
    handover_timeout_s: float = Field(default=2.0, gt=0, le=60)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def load_service_settings(**overrides: Any) -> ServiceSettings:
    """Read `ServiceSettings` from the environment; raise `ConfigError` naming every bad or missing
    setting (never a secret's value)."""
    settings = load_settings_as(ServiceSettings, **overrides)
    problems = []
    if settings.kafka.bootstrap_servers is None:
        problems.append(f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS: required (host:port of the Kafka brokers)")
    if settings.redis.url is None:
        problems.append(f"{ENV_PREFIX}REDIS__URL: required (redis://host:port/db of this node's Redis)")
    else:
        problems.extend(redis_url_problems(settings.redis.url.get_secret_value()))
    if settings.auth_key is None and settings.protocol == "pbft":
        problems.append(
            f"{ENV_PREFIX}AUTH_KEY: required with {ENV_PREFIX}PROTOCOL=pbft, even with "
            f"{ENV_PREFIX}INSECURE_NO_AUTH (the replicas' pair MAC keys are derived from it)"
        )
    elif settings.auth_key is None and not settings.insecure_no_auth:
        problems.append(
            f"{ENV_PREFIX}AUTH_KEY: required (the cluster key, at least 32 bytes); set "
            f"{ENV_PREFIX}INSECURE_NO_AUTH=true to run a throwaway cluster without authentication"
        )
    token = settings.http.admin_token
    if settings.http.admin and token is None:
        problems.append(
            f"{ENV_PREFIX}HTTP__ADMIN_TOKEN: required with {ENV_PREFIX}HTTP__ADMIN=true (the bearer token of "
            "/admin/*: anyone who reaches the port could change the membership otherwise)"
        )
    elif token is not None and len(token.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
        problems.append(f"{ENV_PREFIX}HTTP__ADMIN_TOKEN: at least {MIN_ADMIN_TOKEN_CHARS} characters")
    if problems:
        raise ConfigError("invalid dscore settings:\n  " + "\n  ".join(problems))
    return settings


def redis_url_problems(url: str) -> list[str]:
    """What redis-py would trip over in `url` only once it connects, or not at all, named here at start
    (never with the URL, which may hold a password): a port or a query that does not parse, a database
    that is not a number (redis-py silently uses 0), a query parameter no connection takes (redis-py
    fails at the first command)."""
    name = f"{ENV_PREFIX}REDIS__URL"
    try:
        arguments = parse_url(url)
    except ValueError:
        return [
            f"{name}: not a Redis URL redis-py can read (redis://[user:password@]host[:port][/db], "
            "rediss://... for TLS, unix:///path[?db=N])"
        ]
    problems = []
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and not re.fullmatch(r"/?|/\d+", parts.path):
        problems.append(f"{name}: the database must be a number (/0, /1, ...)")
    connection_class = arguments.pop("connection_class", Connection)
    accepted = {"max_connections"}  # the pool's own
    for klass in inspect.getmro(connection_class):
        init = vars(klass).get("__init__")
        if init is not None:
            accepted |= set(inspect.signature(init).parameters)
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        problems.append(f"{name}: query parameters no Redis connection takes: {', '.join(unknown)}")
    return problems
