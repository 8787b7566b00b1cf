"""The chaos service's settings, read from the environment (`DSCORE_` prefix, `__` between nested names).

    DSCORE_CLUSTER_ID=prod DSCORE_NODES=n1,n2,n3 DSCORE_AUTH_KEY=... \
    DSCORE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
    DSCORE_CHAOS__KUBERNETES__ENABLED=true \
    DSCORE_CHAOS__KUBERNETES__LABEL_SELECTOR=app.kubernetes.io/component=node \
    DSCORE_CHAOS__API_TOKEN="$(cat chaos.token)" DSCORE_CHAOS__HOST=0.0.0.0 \
    dscore-chaos

Names shared with the nodes and the gateway (`DSCORE_CLUSTER_ID`, `DSCORE_NODES`, `DSCORE_AUTH_KEY`,
`DSCORE_KAFKA__BOOTSTRAP_SERVERS`) mean the same thing here, so one ConfigMap and one Secret feed a whole
deployment; the service's own knobs live under `DSCORE_CHAOS__`. Unknown variables are ignored.

Secure by default: the fault API (`/v1/...`) answers only requests with `Authorization: Bearer <token>`,
the token from `DSCORE_CHAOS__API_TOKEN` (a Secret; at least 32 visible ASCII characters, surrounding
whitespace stripped; never logged, never in an error). Without a token the service refuses to start,
unless `DSCORE_CHAOS__INSECURE_NO_AUTH=true` says, explicitly, that anyone who reaches the port may
inject faults (a throwaway setup). That is the chaos API's own switch: the cluster-wide
`DSCORE_INSECURE_NO_AUTH` (control commands without a MAC, below) does not open the API. The service
listens on 127.0.0.1 unless `DSCORE_CHAOS__HOST` says otherwise (a container sets 0.0.0.0).

Backends are switched on by their settings:

- transport faults (omission, delay, partition): when `DSCORE_KAFKA__BOOTSTRAP_SERVERS` is set; they
  need the cluster key (`DSCORE_AUTH_KEY`, as the nodes have it) unless `DSCORE_INSECURE_NO_AUTH=true`;
- Kubernetes (`pod_kill`): `DSCORE_CHAOS__KUBERNETES__ENABLED=true`; in-cluster credentials, or a
  kubeconfig file (`...__KUBECONFIG`);
- local processes (`process_kill`, `process_pause`): `DSCORE_CHAOS__PROCESSES__ENABLED=true`; pid files
  `<run_dir>/<name>.pid` as `make up` writes them.

`load_chaos_settings()` turns every validation failure into one `ConfigError` naming the environment
variable (never a secret's value).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

from dscore.core.codec import check_key
from dscore.core.errors import ConfigError
from dscore.settings import DEFAULT_CLUSTER_ID, ENV_PREFIX, ClusterId, check_auth_key, check_ids, split_ids
from dscore.transport.faults import MAX_FAULT_DURATION_S

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: settings whose values never appear in an error or a log line
SECRET_SETTINGS = frozenset({"auth_key", "chaos.api_token", "chaos.grafana.token"})
#: the shortest API token accepted, as for the node's /admin token (a 32-character random token is far
#: beyond guessing over HTTP)
MIN_API_TOKEN_CHARS = 32
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesOptions(BaseModel):
    """`pod_kill`: `DSCORE_CHAOS__KUBERNETES__<NAME>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    #: the node pods' namespace; default: the service's own (in a cluster), else "default"
    namespace: str | None = None
    #: selects the node pods (the chart labels them)
    label_selector: str = "app.kubernetes.io/component=node"
    #: a kubeconfig file; none: the in-cluster service account
    kubeconfig: Path | None = None
    #: how the leader is found: `http` asks every pod's `/debug/state`; `annotation` takes the pod whose
    #: `leader_annotation` is "true" (something else keeps it up to date: tests, an operator)
    leader_lookup: Literal["http", "annotation"] = "http"
    #: the nodes' HTTP port (`DSCORE_HTTP__PORT` of the node service)
    node_http_port: int = Field(default=8080, ge=1, le=65535)
    #: the pod annotation read by `leader_lookup=annotation`
    leader_annotation: str = "dscore.io/leader"
    #: one API call or one node's HTTP answer
    request_timeout_s: float = Field(default=5.0, gt=0, le=120)


class ProcessOptions(BaseModel):
    """`process_kill`, `process_pause`: `DSCORE_CHAOS__PROCESSES__<NAME>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    #: where `<name>.pid` files are (`make up`: .run/)
    run_dir: Path = Path(".run")
    #: the processes faults may target (comma-separated); default: every `node-*.pid` in run_dir
    names: Annotated[tuple[str, ...], NoDecode] = ()
    #: each process's node HTTP address, for the leader (`node-n1=http://127.0.0.1:23181,...`); default:
    #: the `DSCORE_NODE_URL_<ID>` lines of `<run_dir>/dev.env` (written by `make up`)
    node_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: a process is signalled only if its command line contains this (a recycled pid is never hit)
    cmdline_marker: str = Field(default="dscore", min_length=1)
    request_timeout_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("names", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("names")
    @classmethod
    def _check_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ID.match(name):
                raise ValueError(f"process name {name!r} must be letters, digits, '_', '.', '-'")
        return value

    @field_validator("node_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = {}
            for item in value.split(","):
                if not item.strip():
                    continue
                name, sep, url = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r} must be name=http://host:port")
                pairs[name.strip()] = url.strip()
            return pairs
        return value

    @field_validator("node_urls")
    @classmethod
    def _check_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.match(r"^https?://[^/\s]+/?$", url):
                raise ValueError(f"{name}: {url!r} must be http://host:port")
        return value


class GrafanaOptions(BaseModel):
    """Optional: every injected fault also posted to Grafana's annotation API
    (`DSCORE_CHAOS__GRAFANA__URL`, `...__TOKEN`). The dashboards show faults without it (from
    `dscore_chaos_faults_injected_total`); this adds the exact time and the target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Grafana's base URL (`https://grafana.example`); none: no annotations posted
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    #: a service account token with the annotations:write permission
    token: SecretStr | None = None
    #: put the annotations on this dashboard only (its uid); none: organisation-wide
    dashboard_uid: str | None = None
    request_timeout_s: float = Field(default=2.0, gt=0, le=60)


class ChaosOptions(BaseModel):
    """The service's own knobs: `DSCORE_CHAOS__<NAME>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the address to listen on; 0.0.0.0 in a container (the default keeps a laptop's service private)
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    #: the bearer token every `/v1/...` request must carry (`Authorization: Bearer <token>`), from a
    #: Secret; at least 32 visible ASCII characters (surrounding whitespace is stripped). Never logged,
    #: never in an error message. Required unless `insecure_no_auth`
    api_token: SecretStr | None = None
    #: serve the fault API without a token (anyone who reaches the port can kill nodes): only for a
    #: throwaway setup. A token, when set, is required whatever this says
    insecure_no_auth: bool = False
    #: seeds every random choice ("a random pod", omissions at the nodes are drawn there)
    seed: int = 0
    #: faults scheduled or running at once; more are refused (503)
    max_active_faults: int = Field(default=32, ge=1, le=10_000)
    #: finished faults remembered for `GET /v1/faults` (the oldest are forgotten)
    max_finished_faults: int = Field(default=256, ge=0, le=100_000)
    #: the longest fault (a pause, a transport fault)
    max_duration_s: float = Field(default=600.0, gt=0, le=MAX_FAULT_DURATION_S)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    kubernetes: KubernetesOptions = Field(default_factory=KubernetesOptions)
    processes: ProcessOptions = Field(default_factory=ProcessOptions)
    grafana: GrafanaOptions = Field(default_factory=GrafanaOptions)

    @field_validator("api_token")
    @classmethod
    def _check_api_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never show the token, nor its length.
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("is blank (a token of at least 32 characters, or unset it)")
        if any(c.isspace() for c in token):
            raise ValueError("contains whitespace (a bearer token is one word)")
        if not all("!" <= c <= "~" for c in token):
            raise ValueError("must be visible ASCII characters (it is sent in an HTTP header)")
        if len(token) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_API_TOKEN_CHARS} characters")
        return SecretStr(token)


class KafkaOptions(BaseModel):
    """`DSCORE_KAFKA__BOOTSTRAP_SERVERS` (the nodes read the same name); unset: no transport faults."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    bootstrap_servers: str | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} must be host:port (comma-separated for several)")
        return value


class ChaosSettings(BaseSettings):
    """Everything the chaos service reads at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    cluster_id: ClusterId = DEFAULT_CLUSTER_ID
    #: the cluster's node ids: who a partition isolates a node from, and who "random" picks among
    nodes: Annotated[tuple[str, ...], NoDecode] = ()
    #: the cluster key: control commands carry an HMAC under it, and nodes obey no other
    auth_key: SecretStr | None = None
    #: publish control commands without a MAC (for a cluster whose nodes run without a key)
    insecure_no_auth: bool = False
    kafka: KafkaOptions = Field(default_factory=KafkaOptions)
    chaos: ChaosOptions = Field(default_factory=ChaosOptions)

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        return split_ids(value)

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_ids(value, "node")

    @field_validator("auth_key")
    @classmethod
    def _check_auth_key(cls, value: SecretStr | None) -> SecretStr | None:
        return check_auth_key(value)

    @model_validator(mode="after")
    def _check_backends(self) -> ChaosSettings:
        if self.kafka.bootstrap_servers is not None and self.auth_key is None and not self.insecure_no_auth:
            raise ValueError(
                f"{ENV_PREFIX}AUTH_KEY is required for transport faults (nodes obey only commands with the "
                f"cluster key's MAC); set {ENV_PREFIX}INSECURE_NO_AUTH=true for a cluster without one"
            )
        if self.chaos.grafana.url is not None and self.chaos.grafana.token is None:
            raise ValueError(f"{ENV_PREFIX}CHAOS__GRAFANA__URL needs {ENV_PREFIX}CHAOS__GRAFANA__TOKEN")
        if self.chaos.api_token is None and not self.chaos.insecure_no_auth:
            raise ValueError(
                f"{ENV_PREFIX}CHAOS__API_TOKEN is required (the bearer token of the fault API, at least "
                f"{MIN_API_TOKEN_CHARS} characters: anyone who reaches the port could kill nodes otherwise); "
                f"set {ENV_PREFIX}CHAOS__INSECURE_NO_AUTH=true to serve it without authentication (a "
                "throwaway setup only)"
            )
        return self

    def auth_key_bytes(self) -> bytes | None:
        if self.auth_key is None:
            return None
        return check_key(self.auth_key.get_secret_value().encode("utf-8", "surrogatepass"))

    def kubernetes_namespace(self) -> str:
        configured = self.chaos.kubernetes.namespace
        if configured:
            return configured
        try:
            return _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"


def _env_name(location: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def _is_secret(location: tuple[int | str, ...]) -> bool:
    path = ".".join(str(part) for part in location)
    return any(path == s or path.startswith(s + ".") for s in SECRET_SETTINGS)


def load_chaos_settings(**overrides: Any) -> ChaosSettings:
    """Read `ChaosSettings` from the environment (keyword arguments win); raise `ConfigError` naming every
    bad setting by its environment variable."""
    try:
        return ChaosSettings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(part for part in item["loc"] if not isinstance(part, int))
            where = _env_name(location) if location else "settings"
            value = item.get("input")
            hidden = isinstance(value, dict) or item["type"] == "extra_forbidden" or _is_secret(location)
            shown = "" if hidden else f" (got {value!r})"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}{shown}")
        raise ConfigError("invalid dscore chaos settings:\n  " + "\n  ".join(problems)) from None
