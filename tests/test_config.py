"""Configuration: flags > env > TOML > defaults, and errors that name the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from madsidecar.config import (
    DEFAULT_SOCKET,
    Config,
    ConfigError,
    PolicyRule,
    RateLimit,
    load_config,
    read_redis_password,
    redact_url,
    reload_changes,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "madsidecar.toml"
    path.write_text(text)
    return str(path)


def test_defaults_match_the_contract() -> None:
    config = load_config({}, {})
    assert config.socket == DEFAULT_SOCKET == "/run/madsidecar/madsidecar.sock"
    assert config.key_prefix == "msc:"
    assert config.max_frame_bytes == 4 * 1024 * 1024
    assert config.max_inflight == 1024
    assert config.redis_timeout_ms == 1000
    assert config.redis_url is None and config.embedded
    assert config.socket_mode == 0o660
    assert config.policy == (PolicyRule(),)


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_prefix = "file:"\nnode_id = "from-file"\nmax_inflight = 7\n')
    env = {"MADSIDECAR_KEY_PREFIX": "env:", "MADSIDECAR_NODE_ID": "from-env"}
    config = load_config({"config": path, "key_prefix": "flag:"}, env)
    assert config.key_prefix == "flag:"
    assert config.node_id == "from-env"
    assert config.max_inflight == 7
    assert config.config_file == path


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "max_inflight = 9\n")
    assert load_config({}, {"MADSIDECAR_CONFIG": path}).max_inflight == 9


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MADSIDECAR_MAX_INFLIGHT": "0"}, "max_inflight: must be at least 1"),
        ({"MADSIDECAR_MAX_INFLIGHT": "many"}, "max_inflight: expected an integer"),
        ({"MADSIDECAR_LOG_LEVEL": "loud"}, "log_level: must be one of"),
        ({"MADSIDECAR_REDIS_URL": "http://x"}, "redis_url: must start with"),
        ({"MADSIDECAR_REDIS_URL": "redis+sentinel://h:1"}, "redis_url: a Sentinel URL ends with"),
        ({"MADSIDECAR_REDIS_URL": "redis+sentinel:///m"}, "redis_url: a Sentinel URL lists"),
        ({"MADSIDECAR_REDIS_URL": "redis+sentinel://h:0/m"}, "port must be 1 to 65535"),
        ({"MADSIDECAR_REDIS_URL": "redis+sentinel://u:pw@h:x/m"}, r"redis\+sentinel://u:\*\*\*@"),
        ({"MADSIDECAR_REDIS_URL": "redis+cluster://"}, "a Cluster URL lists at least one"),
        ({"MADSIDECAR_REDIS_URL": "redis+cluster://h:1/2"}, "Redis Cluster only has db 0"),
        ({"MADSIDECAR_REDIS_URL": "redis+cluster://h:1,h:99999"}, "port must be 1 to 65535"),
        ({"MADSIDECAR_REDIS_URL": "rediss+cluster://h:1/3"}, "Redis Cluster only has db 0"),
        ({"MADSIDECAR_REDIS_URL": "rediss+sentinel://h:1"}, "a Sentinel URL ends with"),
        (
            {"MADSIDECAR_REDIS_URL": "redis+cluster://h:1", "MADSIDECAR_KEY_PREFIX": "a{b}:"},
            "key_prefix: must not contain { or }",
        ),
        (
            {"MADSIDECAR_REDIS_URL": "redis://h:1", "MADSIDECAR_REDIS_TLS_CA_FILE": __file__},
            "no Redis URL is rediss://",
        ),
        ({"MADSIDECAR_REDIS_SENTINEL_PASSWORD_FILE": "/nonexistent"}, "password_file: cannot read"),
        ({"MADSIDECAR_EMBEDDED_PERSISTENCE": "maybe"}, "embedded_persistence: expected true"),
        ({"MADSIDECAR_REDIS_PASSWORD_FILE": "/nonexistent"}, "redis_password_file: cannot read"),
        ({"MADSIDECAR_KEY_PREFIX": ""}, None),
    ],
)
def test_bad_values_are_named(env: dict[str, str], fragment: str | None) -> None:
    if fragment is None:
        assert load_config({}, env).key_prefix == "msc:", "an empty env var means unset"
        return
    with pytest.raises(ConfigError, match=fragment):
        load_config({}, env)


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-frame-bytes"):
        load_config({"max_frame_bytes": "lots"}, {})


def test_unknown_toml_key_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_inflite: unknown setting"):
        load_config({"config": write(tmp_path, "max_inflite = 3\n")}, {})
    with pytest.raises(ConfigError, match="max_inflight: expected int, got str"):
        load_config({"config": write(tmp_path, 'max_inflight = "3"\n')}, {})
    with pytest.raises(ConfigError, match=r"config_file: .* does not exist"):
        load_config({"config": str(tmp_path / "missing.toml")}, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({"config": write(tmp_path, "not toml = = =\n")}, {})


def test_socket_mode_is_octal_everywhere(tmp_path: Path) -> None:
    assert load_config({"socket_mode": "0600"}, {}).socket_mode == 0o600
    assert (
        load_config({"config": write(tmp_path, 'socket_mode = "0640"\n')}, {}).socket_mode == 0o640
    )


def test_policy_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[policy]]
uids = [1000, 1001]
namespaces = ["billing"]
methods = ["cache", "lock"]

[[policy]]
gids = [50]
namespaces = ["*"]
""",
    )
    first, second = load_config({"config": path}, {}).policy
    assert first.matches(1000, frozenset({5})) and not first.matches(7, frozenset({5}))
    assert first.allows_namespace("billing") and not first.allows_namespace("default")
    assert first.allows_group("lock") and not first.allows_group("session")
    assert second.matches(9, frozenset({7, 50})), "a supplementary group matches too"
    assert second.allows_namespace("anything")
    assert second.allows_group("session")


def test_bad_policy_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\[0\].uids"):
        load_config({"config": write(tmp_path, '[[policy]]\nuids = ["root"]\n')}, {})
    with pytest.raises(ConfigError, match=r"policy\[0\]: unknown keys"):
        load_config({"config": write(tmp_path, "[[policy]]\nuser = 1\n")}, {})


def test_password_from_file_and_redaction(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    config = load_config({"redis_password_file": str(secret)}, {})
    assert read_redis_password(config) == "hunter2"
    assert "hunter2" not in repr(load_config({}, {"MADSIDECAR_REDIS_PASSWORD": "hunter2"}))
    assert redact_url("redis://user:hunter2@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://host:6379") == "redis://host:6379"
    assert redact_url("unix://:pw@/run/redis.sock") == "unix://:***@/run/redis.sock"


def test_reload_applies_only_reloadable_settings() -> None:
    old = Config()
    new = Config(log_level="debug", max_inflight=10, key_prefix="other:")
    merged, applied, ignored = reload_changes(old, new)
    assert merged.log_level == "debug" and merged.max_inflight == 10
    assert merged.key_prefix == "msc:"
    assert sorted(applied) == ["log_level", "max_inflight"]
    assert ignored == ["key_prefix"]


def test_range_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="from MADSIDECAR_MAX_INFLIGHT"):
        load_config({}, {"MADSIDECAR_MAX_INFLIGHT": "0"})
    with pytest.raises(ConfigError, match="from --log-level"):
        load_config({"log_level": "loud"}, {})
    path = write(tmp_path, "redis_timeout_ms = 1\n")
    with pytest.raises(ConfigError, match=f"from {path}"):
        load_config({"config": path}, {})


def test_policy_method_groups_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, '[[policy]]\nmethods = ["caches"]\n')
    with pytest.raises(ConfigError, match="unknown method group caches"):
        load_config({"config": path}, {})


def test_embedded_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="embedded_persistence: needs embedded_dir"):
        load_config({"embedded_persistence": "true"}, {})
    with pytest.raises(ConfigError, match="embedded_maxmemory"):
        load_config({"embedded_maxmemory": "1gb\nslaveof evil 6379"}, {})
    assert load_config({"embedded_maxmemory": "256mb"}, {}).embedded_maxmemory == "256mb"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://u:p@ss@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://h:6379/0?password=hunter2&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=x", "unix:///run/redis.sock?password=***"),
        ("rediss://default:pw@h:6380", "rediss://default:***@h:6380"),
        ("redis://user@h", "redis://user@h"),
    ],
)
def test_redaction_covers_every_place_a_password_can_be(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


RULES_TOML = """
[[ratelimit_rules]]
name = "per-ip"
limit = 100
window_ms = 60000

[[ratelimit_rules]]
name = "per-user"
limit = 20
window_ms = 1000
algorithm = "gcra"
on_redis_down = "local"
shadow = true
overrides = { "tenant:big" = 200, "batch" = { limit = 5000, window_ms = 60000 } }
"""


def test_ratelimit_rules_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES_TOML)
    config = load_config({"config": str(path)}, {})
    per_ip, per_user = config.ratelimit_rules
    assert (per_ip.name, per_ip.algorithm, per_ip.on_redis_down) == (
        "per-ip",
        "sliding_window",
        "allow",
    )
    assert per_user.shadow and per_user.on_redis_down == "local"
    assert per_user.limit_for("tenant:big") == RateLimit(200, 1000)
    assert per_user.limit_for("batch") == RateLimit(5000, 60000)
    assert per_user.limit_for("anyone") == RateLimit(20, 1000)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('name = "a"\nlimit = 5\n', "window_ms: expected an integer"),
        ('name = "a"\nlimit = 0\nwindow_ms = 10\n', "limit: expected an integer from 1"),
        ('name = "a"\nlimit = 5\nwindow_ms = 10\nalgorithm = "leaky"\n', "algorithm"),
        ('name = "a"\nlimit = 5\nwindow_ms = 10\non_redis_down = "retry"\n', "on_redis_down"),
        ('name = "a"\nlimit = 5\nwindow_ms = 10\nburst = 3\n', "unknown keys ['burst']"),
        ('name = "a"\nlimit = 50000\nwindow_ms = 10\n', "use sliding_counter"),
        ('name = "a"\nlimit = 5\nwindow_ms = 10\noverrides = { k = "x" }\n', "overrides.k"),
        ("limit = 5\nwindow_ms = 10\n", "name: expected a name"),
    ],
)
def test_bad_ratelimit_rules_are_named(tmp_path: Path, toml: str, fragment: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[ratelimit_rules]]\n" + toml)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config({"config": str(path)}, {})


def test_a_rule_defined_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    rule = '[[ratelimit_rules]]\nname = "a"\nlimit = 5\nwindow_ms = 10\n'
    path.write_text(rule * 2)
    with pytest.raises(ConfigError, match="defined twice"):
        load_config({"config": str(path)}, {})
