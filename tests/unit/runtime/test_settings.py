"""NodeSettings and ClusterSettings: defaults, environment parsing, clear errors for wrong settings,
the cluster-settings fingerprint, and a cluster key that never shows."""

from __future__ import annotations

import pytest

from dscore.core.cluster import SettingsNotice, check_notice, diff_settings, fingerprint_of
from dscore.core.errors import ConfigError, SettingsMismatchError
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.node import RuntimeConfig
from dscore.settings import ClusterSettings, NodeSettings, RaftClusterSettings, load_settings

KEY = "correct horse battery staple, 32+ bytes long"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DSCORE_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.tick_interval_s == 0.01
    assert settings.members == ("n1",)
    config = settings.runtime_config()
    assert config == RuntimeConfig(
        tick_interval_s=0.01,
        max_inbound_batch=settings.queues.inbound_batch_messages,
        max_inbound_buffer=settings.queues.inbound_buffer_messages,
    )


def test_environment_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_NODE_ID", "n2")
    monkeypatch.setenv("DSCORE_PEERS", "n1, n3")
    monkeypatch.setenv("DSCORE_TICK_INTERVAL_S", "0.02")
    monkeypatch.setenv("DSCORE_QUEUES__INBOX_MAX_MESSAGES", "123")
    settings = NodeSettings()
    assert settings.node_id == "n2" and settings.peers == ("n1", "n3")
    assert settings.members == ("n1", "n2", "n3")
    assert settings.tick_interval_s == 0.02 and settings.queues.inbox_max_messages == 123


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("DSCORE_TICK_INTERVAL_S", "-1", "DSCORE_TICK_INTERVAL_S: Input should be greater than 0"),
        ("DSCORE_TICK_INTERVAL_S", "fast", "DSCORE_TICK_INTERVAL_S: Input should be a valid number"),
        ("DSCORE_QUEUES__INBOX_MAX_MESSAGES", "0", "DSCORE_QUEUES__INBOX_MAX_MESSAGES"),
        ("DSCORE_NODE_ID", "bad id!", "DSCORE_NODE_ID"),
        ("DSCORE_PEERS", "n2,n2", "duplicate peer ids"),
        ("DSCORE_PEERS", "n1,n2", "must list the OTHER members"),
        ("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "1", "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS"),
        ("DSCORE_RAFT__HEARTBEAT_TICKS", "10", "heartbeat_ticks (10) must be smaller"),
        ("DSCORE_RAFT__READ_ONLY_OPTION", "sometimes", "DSCORE_RAFT__READ_ONLY_OPTION"),
        ("DSCORE_RAFT__PRE_VOTE", "perhaps", "DSCORE_RAFT__PRE_VOTE"),
        ("DSCORE_RAFT__ELECTON_TIMEOUT_TICKS", "20", "DSCORE_RAFT__ELECTON_TIMEOUT_TICKS"),
        ("DSCORE_CLUSTER_ID", "two words", "DSCORE_CLUSTER_ID"),
        ("DSCORE_PROTOCOL", "zab", "DSCORE_PROTOCOL: Input should be 'raft', 'sequencer', 'paxos' or 'pbft'"),
        ("DSCORE_INITIAL_CLUSTER_STATE", "maybe", "DSCORE_INITIAL_CLUSTER_STATE"),
        (
            "DSCORE_INITIAL_CLUSTER_STATE",
            "existing",
            "DSCORE_INITIAL_CLUSTER_STATE=existing needs DSCORE_PEERS",
        ),
        ("DSCORE_AUTH_KEY", "too short", "DSCORE_AUTH_KEY: Value error, must be at least 32 bytes, got 9"),
        ("DSCORE_MAX_ENVELOPE_BYTES", "65536", "DSCORE_RAFT__MAX_BYTES_PER_MSG (1048576) must be smaller"),
        ("DSCORE_MAX_SESSIONS", "0", "DSCORE_MAX_SESSIONS"),
    ],
)
def test_wrong_settings_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match="invalid dscore settings") as error:
        load_settings()
    assert message in str(error.value)


def test_keyword_overrides_and_unknown_keys() -> None:
    assert load_settings(seed=5).seed == 5
    with pytest.raises(ConfigError, match="DSCORE_TICKS"):
        load_settings(ticks=3)


def test_runtime_config_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match="tick_interval_s"):
        RuntimeConfig(tick_interval_s=0)
    with pytest.raises(ConfigError, match="max_inbound_batch"):
        RuntimeConfig(max_inbound_batch=0)
    with pytest.raises(ConfigError, match="max_pending_proposals"):
        ExecutorConfig(max_pending_proposals=0)
    with pytest.raises(ConfigError, match="commit_every_ticks"):
        ExecutorConfig(commit_every_ticks=0)


def test_raft_settings_default_to_raft_config_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dscore.protocols.raft import RaftConfig, ReadOnlyOption

    # one departure, on purpose: the node service sends no append only to carry a commit index
    assert load_settings().raft.raft_config() == RaftConfig(commit_only_appends=False)
    monkeypatch.setenv("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20")
    monkeypatch.setenv("DSCORE_RAFT__READ_ONLY_OPTION", "lease")
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")
    monkeypatch.setenv("DSCORE_RAFT__COMMIT_ONLY_APPENDS", "true")
    config = load_settings().raft.raft_config()
    assert config == RaftConfig(
        election_timeout_ticks=20, read_only_option=ReadOnlyOption.LEASE, pre_vote=False
    )


# -- cluster-wide settings and their fingerprint --------------------------------------------------------


def test_cluster_settings_default_to_the_node_defaults_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().cluster_settings() == ClusterSettings()
    monkeypatch.setenv("DSCORE_CLUSTER_ID", "prod-eu")
    monkeypatch.setenv("DSCORE_PROTOCOL", "sequencer")
    monkeypatch.setenv("DSCORE_PEERS", "n2,n3")
    monkeypatch.setenv("DSCORE_INITIAL_CLUSTER_STATE", "existing")
    monkeypatch.setenv("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20")
    settings = load_settings()
    assert settings.initial_cluster_state == "existing" and settings.peers == ("n2", "n3")
    cluster = settings.cluster_settings()
    assert (cluster.cluster_id, cluster.protocol) == ("prod-eu", "sequencer")
    assert cluster.raft == RaftClusterSettings(election_timeout_ticks=20)


def test_every_cluster_setting_is_read_by_the_node_with_the_same_rule() -> None:
    node, cluster = NodeSettings.model_fields, ClusterSettings.model_fields
    for name, info in cluster.items():
        if name != "raft":
            assert (node[name].annotation, node[name].metadata, node[name].default) == (
                info.annotation,
                info.metadata,
                info.default,
            ), name


def test_description_is_flat_and_names_every_cluster_setting() -> None:
    assert ClusterSettings().description() == {
        "cluster_id": "dscore",
        "protocol": "raft",
        "tick_interval_s": "0.01",
        "max_sessions": "100000",
        "max_envelope_bytes": "4194304",
        "raft.election_timeout_ticks": "10",
        "raft.heartbeat_ticks": "1",
        "raft.pre_vote": "true",
        "raft.check_quorum": "true",
        "raft.read_only_option": "read_index",
        "raft.lease_ticks": "default",
    }
    assert ClusterSettings().fingerprint() == fingerprint_of(ClusterSettings().description())


#: one change per cluster-wide setting: (environment variable, value, the description name it changes)
CLUSTER_WIDE = [
    ("DSCORE_CLUSTER_ID", "other", "cluster_id"),
    ("DSCORE_PROTOCOL", "sequencer", "protocol"),
    ("DSCORE_TICK_INTERVAL_S", "0.02", "tick_interval_s"),
    ("DSCORE_MAX_SESSIONS", "10", "max_sessions"),
    ("DSCORE_MAX_ENVELOPE_BYTES", "8388608", "max_envelope_bytes"),
    ("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20", "raft.election_timeout_ticks"),
    ("DSCORE_RAFT__HEARTBEAT_TICKS", "2", "raft.heartbeat_ticks"),
    ("DSCORE_RAFT__PRE_VOTE", "false", "raft.pre_vote"),
    ("DSCORE_RAFT__CHECK_QUORUM", "false", "raft.check_quorum"),
    ("DSCORE_RAFT__READ_ONLY_OPTION", "lease", "raft.read_only_option"),
    ("DSCORE_RAFT__LEASE_TICKS", "5", "raft.lease_ticks"),
]


#: the same for the protocols with sections of their own (only the running protocol's is fingerprinted)
PROTOCOL_WIDE = {
    "paxos": [
        ("DSCORE_PAXOS__ELECTION_TIMEOUT_TICKS", "15", "paxos.election_timeout_ticks"),
        ("DSCORE_PAXOS__HEARTBEAT_TICKS", "3", "paxos.heartbeat_ticks"),
        ("DSCORE_PAXOS__WINDOW_SLOTS", "8", "paxos.window_slots"),
        ("DSCORE_PAXOS__MAX_OPEN_SLOTS", "512", "paxos.max_open_slots"),
        ("DSCORE_PAXOS__MAX_ENTRIES_PER_MSG", "4", "paxos.max_entries_per_msg"),
        ("DSCORE_PAXOS__RETRY_TICKS", "5", "paxos.retry_ticks"),
    ],
    "pbft": [
        ("DSCORE_PBFT__CHECKPOINT_INTERVAL", "4", "pbft.checkpoint_interval"),
        ("DSCORE_PBFT__LOG_SIZE_CHECKPOINTS", "3", "pbft.log_size_checkpoints"),
        ("DSCORE_PBFT__VIEW_CHANGE_TIMEOUT_TICKS", "60", "pbft.view_change_timeout_ticks"),
        ("DSCORE_PBFT__STATUS_EVERY_TICKS", "5", "pbft.status_every_ticks"),
        ("DSCORE_PBFT__VIEW_CHANGE_RESEND_TICKS", "7", "pbft.view_change_resend_ticks"),
        ("DSCORE_PBFT__MAX_QUEUED_REQUESTS", "64", "pbft.max_queued_requests"),
        ("DSCORE_PBFT__MAX_CATCH_UP_ENTRIES", "4", "pbft.max_catch_up_entries"),
        ("DSCORE_PBFT__FAULTS_TOLERATED", "1", "pbft.faults_tolerated"),
    ],
}


def test_the_table_below_covers_every_cluster_setting() -> None:
    assert {name for _, _, name in CLUSTER_WIDE} == set(ClusterSettings().description())
    for protocol, table in PROTOCOL_WIDE.items():
        described = set(ClusterSettings(protocol=protocol).description())  # type: ignore[arg-type]
        shared = {name for _, _, name in CLUSTER_WIDE if "." not in name}
        assert {name for _, _, name in table} | shared == described, protocol


@pytest.mark.parametrize(
    ("protocol", "env", "value", "name"),
    [(protocol, *row) for protocol, table in PROTOCOL_WIDE.items() for row in table],
)
def test_a_protocol_setting_changes_the_fingerprint_of_its_protocol_only(
    monkeypatch: pytest.MonkeyPatch, protocol: str, env: str, value: str, name: str
) -> None:
    peers = "n2,n3,n4"
    monkeypatch.setenv("DSCORE_PROTOCOL", protocol)
    mine = load_settings(node_id="n1", peers=peers).cluster_settings()
    monkeypatch.setenv(env, value)
    theirs = load_settings(node_id="n2", peers="n1,n3,n4").cluster_settings()
    [line] = diff_settings(mine.description(), theirs.description(), peer="n2")
    assert line.startswith(f"{name}: ")
    # Raft's knobs are not part of a Paxos or PBFT cluster's fingerprint, and this one not of Raft's
    monkeypatch.setenv("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20")
    assert (
        load_settings(node_id="n2", peers="n1,n3,n4").cluster_settings().fingerprint() == theirs.fingerprint()
    )
    monkeypatch.setenv("DSCORE_PROTOCOL", "raft")
    raft_before = load_settings(node_id="n1", peers=peers).cluster_settings().fingerprint()
    monkeypatch.delenv(env)
    assert load_settings(node_id="n1", peers=peers).cluster_settings().fingerprint() == raft_before


@pytest.mark.parametrize(
    ("peers", "tolerated", "message"),
    [
        ("n2,n3", None, r"DSCORE_PROTOCOL=pbft needs n >= 3f \+ 1 members with f >= 1, so at least 4; got 3"),
        ("", None, "got 1"),
        ("n2,n3,n4,n5,n6", "2", r"DSCORE_PBFT__FAULTS_TOLERATED=2 needs at least 7, got 6"),
    ],
)
def test_pbft_needs_3f_plus_1_members_and_says_which_setting(
    monkeypatch: pytest.MonkeyPatch, peers: str, tolerated: str | None, message: str
) -> None:
    monkeypatch.setenv("DSCORE_PROTOCOL", "pbft")
    monkeypatch.setenv("DSCORE_PEERS", peers)
    if tolerated is not None:
        monkeypatch.setenv("DSCORE_PBFT__FAULTS_TOLERATED", tolerated)
    with pytest.raises(ConfigError, match=message):
        load_settings()
    monkeypatch.setenv("DSCORE_PEERS", "n2,n3,n4,n5,n6,n7")
    assert load_settings().members == ("n1", "n2", "n3", "n4", "n5", "n6", "n7")


@pytest.mark.parametrize("protocol", ["paxos", "pbft"])
def test_only_raft_nodes_join_a_running_cluster(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    monkeypatch.setenv("DSCORE_PROTOCOL", protocol)
    monkeypatch.setenv("DSCORE_PEERS", "n2,n3,n4")
    monkeypatch.setenv("DSCORE_INITIAL_CLUSTER_STATE", "existing")
    with pytest.raises(
        ConfigError, match=f"INITIAL_CLUSTER_STATE=existing: DSCORE_PROTOCOL={protocol} runs a fixed"
    ):
        load_settings()


def test_bad_paxos_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_PROTOCOL", "paxos")
    monkeypatch.setenv("DSCORE_PAXOS__HEARTBEAT_TICKS", "10")
    with pytest.raises(ConfigError, match=r"DSCORE_PAXOS: .*heartbeat_ticks \(10\) must be smaller"):
        load_settings()


@pytest.mark.parametrize(("env", "value", "name"), CLUSTER_WIDE)
def test_a_cluster_setting_changes_the_fingerprint_and_the_diff_names_it(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, name: str
) -> None:
    mine = load_settings(node_id="n1").cluster_settings()
    monkeypatch.setenv(env, value)
    theirs = load_settings(node_id="n2").cluster_settings()
    assert mine.fingerprint() != theirs.fingerprint()
    [line] = diff_settings(mine.description(), theirs.description(), peer="n2")
    assert line.startswith(f"{name}: ") and line.endswith(f"{theirs.description()[name]} on n2")


def test_two_nodes_with_different_election_timeouts_refuse_each_other_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSCORE_NODE_ID", "n1")
    monkeypatch.setenv("DSCORE_PEERS", "n2")
    n1 = load_settings().cluster_settings()
    monkeypatch.setenv("DSCORE_NODE_ID", "n2")
    monkeypatch.setenv("DSCORE_PEERS", "n1")
    monkeypatch.setenv("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20")
    n2 = load_settings().cluster_settings()
    assert n1.fingerprint() != n2.fingerprint()
    assert diff_settings(n1.description(), n2.description(), peer="n2") == [
        "raft.election_timeout_ticks: 10 here, 20 on n2"
    ]
    with pytest.raises(SettingsMismatchError, match=r"raft\.election_timeout_ticks: 20 here, 10 on n1"):
        check_notice(n2.description(), SettingsNotice.of(n1.description()), peer="n1")


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("DSCORE_NODE_ID", "n7"),
        ("DSCORE_PEERS", "n2,n3"),
        ("DSCORE_QUEUES__INBOX_MAX_MESSAGES", "5"),
        ("DSCORE_QUEUES__INBOUND_BUFFER_MESSAGES", "100000"),
        ("DSCORE_SEED", "99"),
        ("DSCORE_GC_GEN0_THRESHOLD", "0"),
        ("DSCORE_MAX_CATCHUP_TICKS", "5"),
        ("DSCORE_SNAPSHOT_EVERY_ENTRIES", "7"),
        ("DSCORE_MAX_PENDING_PROPOSALS", "3"),
        ("DSCORE_MAX_PENDING_READS", "3"),
        ("DSCORE_AUTH_KEY", KEY),
        ("DSCORE_RAFT__MAX_INFLIGHT_MSGS", "4"),
        ("DSCORE_RAFT__MAX_ENTRIES_PER_MSG", "1"),
        ("DSCORE_RAFT__MAX_BYTES_PER_MSG", "1000"),
        ("DSCORE_RAFT__SNAPSHOT_CHUNK_BYTES", "1000"),
    ],
)
def test_node_local_settings_leave_the_fingerprint_alone(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    before = load_settings()
    monkeypatch.setenv(env, value)
    after = load_settings()
    assert after != before  # the setting was read...
    assert (
        after.cluster_settings().fingerprint() == before.cluster_settings().fingerprint()
    )  # ...and is local


def test_a_joining_node_is_described_by_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    founder = load_settings(node_id="n1", peers="n2,n3").cluster_settings()
    monkeypatch.setenv("DSCORE_NODE_ID", "n4")
    monkeypatch.setenv("DSCORE_PEERS", "n1,n2,n3")
    monkeypatch.setenv("DSCORE_INITIAL_CLUSTER_STATE", "existing")
    joiner = load_settings()
    assert joiner.initial_cluster_state == "existing" and joiner.members == ("n1", "n2", "n3", "n4")
    assert joiner.cluster_settings().fingerprint() == founder.fingerprint()


def test_each_difference_names_the_variable_to_change() -> None:
    # Settings are compared as configured, not as derived: a spelled-out lease differs from the default
    # one even where they come to the same ticks, and an election timeout change is one line, not two.
    default, spelled = ClusterSettings(), ClusterSettings(raft=RaftClusterSettings(lease_ticks=8))
    assert diff_settings(default.description(), spelled.description(), peer="n2") == [
        "raft.lease_ticks: default here, 8 on n2"
    ]


# -- the cluster key ----------------------------------------------------------------------------------


def test_the_auth_key_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().auth_key_bytes() is None
    monkeypatch.setenv("DSCORE_AUTH_KEY", KEY)
    settings = load_settings()
    assert settings.auth_key_bytes() == KEY.encode()
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.auth_key)):
        assert "horse" not in text
    assert "horse" not in repr(settings.cluster_settings().description())


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("DSCORE_AUTH_KEY", "horse, too short"),  # too short
        ("DSCORE_RAFT__AUTH_KEY", KEY),  # misplaced: unknown settings are not echoed either
    ],
)
def test_a_bad_auth_key_setting_names_the_variable_not_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert env in str(error.value)
    assert "horse" not in str(error.value) and "horse" not in repr(error.value)
