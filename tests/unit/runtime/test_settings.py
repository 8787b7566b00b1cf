"""NodeSettings: defaults, environment parsing, and clear errors for wrong settings."""

from __future__ import annotations

import pytest

from dscore.core.errors import ConfigError
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.node import RuntimeConfig
from dscore.settings import NodeSettings, load_settings


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

    assert load_settings().raft.raft_config() == RaftConfig()
    monkeypatch.setenv("DSCORE_RAFT__ELECTION_TIMEOUT_TICKS", "20")
    monkeypatch.setenv("DSCORE_RAFT__READ_ONLY_OPTION", "lease")
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")
    config = load_settings().raft.raft_config()
    assert config == RaftConfig(
        election_timeout_ticks=20, read_only_option=ReadOnlyOption.LEASE, pre_vote=False
    )
