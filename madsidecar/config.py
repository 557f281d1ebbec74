"""One typed configuration object, built from flags, `MADSIDECAR_*` env and a TOML file.

Precedence, highest first: command-line flag, environment variable, TOML file, default.
Every setting is validated at start; an error names the setting and where the bad value
came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from socket import gethostname
from typing import Any, Final

from .protocol import DEFAULT_MAX_FRAME_BYTES
from .redis_urls import PLAIN_SCHEMES, RedisUrlError, check_redis_url, is_cluster_url, uses_tls

ENV_PREFIX: Final = "MADSIDECAR_"
DEFAULT_SOCKET: Final = "/run/madsidecar/madsidecar.sock"
MAX_NAME_BYTES: Final = 512
MAX_WINDOW_MS: Final = 366 * 86_400_000
METHOD_GROUPS: Final = frozenset(
    {"*", "core", "cache", "lock", "session", "presence", "pubsub", "ratelimit"}
)
_MAXMEMORY: Final = re.compile(r"[0-9]+(?:[kmg]b?)?", re.IGNORECASE)


class ConfigError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True)
class PolicyRule:
    """Which peers (by uid/gid) may use which namespaces and method groups.

    `uids`/`gids` of None match any peer; a rule with both set matches a peer that has
    either. `gids` match the peer's primary group and its supplementary groups.
    `"*"` in `namespaces` or `methods` allows everything.
    """

    uids: frozenset[int] | None = None
    gids: frozenset[int] | None = None
    namespaces: frozenset[str] = frozenset({"default"})
    methods: frozenset[str] = frozenset({"*"})

    def matches(self, uid: int | None, groups: frozenset[int]) -> bool:
        if self.uids is None and self.gids is None:
            return True
        return (self.uids is not None and uid in self.uids) or (
            self.gids is not None and not self.gids.isdisjoint(groups)
        )

    def allows_namespace(self, namespace: str) -> bool:
        return "*" in self.namespaces or namespace in self.namespaces

    def allows_group(self, group: str) -> bool:
        return "*" in self.methods or group in self.methods


DEFAULT_POLICY: Final = (PolicyRule(),)

RATE_ALGORITHMS: Final = ("sliding_window", "sliding_counter", "gcra")
ON_REDIS_DOWN: Final = ("allow", "deny", "local")


@dataclass(frozen=True)
class RateLimit:
    """A limit: `limit` units per `window_ms`."""

    limit: int
    window_ms: int


@dataclass(frozen=True)
class RateRule:
    """A named rate limit from the configuration (`[[ratelimit_rules]]`).

    `overrides` gives some keys (a big tenant, an internal IP) a limit of their own.
    `shadow`: never deny, but report (and count) what would have been denied.
    """

    name: str
    limit: int
    window_ms: int
    algorithm: str = "sliding_window"
    on_redis_down: str = "allow"
    shadow: bool = False
    overrides: Mapping[str, RateLimit] = field(default_factory=dict)

    def limit_for(self, key: str) -> RateLimit:
        override = self.overrides.get(key)
        return override if override is not None else RateLimit(self.limit, self.window_ms)


@dataclass(frozen=True)
class WarmTarget:
    """Cache keys loaded from L2 into L1 at start and after every L1 flush."""

    namespace: str
    prefix: str


def _setting(
    default: Any,
    help: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[str, ...] = (),
    reloadable: bool = False,
    secret: bool = False,
) -> Any:
    meta = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "reloadable": reloadable,
        "secret": secret,
    }
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class Config:
    socket: str = _setting(DEFAULT_SOCKET, "Unix socket path clients connect to")
    socket_mode: int = _setting(
        0o660, "permission bits of the socket file (octal, e.g. 0660)", minimum=0, maximum=0o777
    )
    socket_group: str | None = _setting(None, "group that owns the socket file")
    redis_url: str | None = _setting(
        None,
        "redis://, rediss://, unix://, redis[s]+sentinel://host:port,.../service or "
        "redis[s]+cluster://host:port,... URL; unset: run an embedded redis-server",
    )
    redis_password: str | None = _setting(
        None, "Redis password (prefer redis_password_file)", secret=True
    )
    redis_password_file: str | None = _setting(None, "file holding the Redis password")
    redis_username: str | None = _setting(None, "Redis ACL user name (a user in the URL wins)")
    redis_tls_ca_file: str | None = _setting(
        None, "rediss://: PEM file of the CA(s) the server's certificate must chain to"
    )
    redis_tls_cert_file: str | None = _setting(
        None, "rediss://: PEM client certificate, for servers that require one"
    )
    redis_tls_key_file: str | None = _setting(None, "rediss://: PEM key of the client certificate")
    redis_sentinel_username: str | None = _setting(
        None, "Sentinel URL: ACL user name of the sentinels themselves, if they require one"
    )
    redis_sentinel_password: str | None = _setting(
        None, "Sentinel URL: the sentinels' own password (prefer the _file)", secret=True
    )
    redis_sentinel_password_file: str | None = _setting(
        None, "Sentinel URL: file holding the sentinels' own password"
    )
    redis_timeout_ms: int = _setting(
        1000, "deadline of every Redis command", minimum=10, maximum=600_000
    )
    redis_connect_timeout_ms: int = _setting(
        1000, "deadline of one connection attempt", minimum=10, maximum=600_000
    )
    redis_health_interval_ms: int = _setting(
        500, "how often the link to Redis is probed", minimum=50, maximum=60_000
    )
    node_id: str = _setting(gethostname(), "this node's name, unique in the fleet")
    key_prefix: str = _setting("msc:", "prefix of every key the sidecar writes to Redis")
    max_frame_bytes: int = _setting(
        DEFAULT_MAX_FRAME_BYTES,
        "largest frame accepted or sent",
        minimum=1024,
        maximum=1 << 30,
    )
    max_inflight: int = _setting(
        1024,
        "unanswered requests per connection before reading pauses",
        minimum=1,
        maximum=1_000_000,
        reloadable=True,
    )
    shutdown_timeout_ms: int = _setting(
        3000,
        "how long SIGTERM waits for in-flight requests",
        minimum=0,
        maximum=600_000,
        reloadable=True,
    )
    log_level: str = _setting(
        "info",
        "least severe level logged",
        choices=("debug", "info", "warning", "error"),
        reloadable=True,
    )
    log_format: str = _setting("kv", "log line format", choices=("kv", "json"))
    metrics_listen: str | None = _setting(
        None, "HOST:PORT of the Prometheus endpoint (GET /metrics); unset: no endpoint"
    )
    redis_server: str = _setting(
        "redis-server", "redis-server binary used for the embedded default"
    )
    embedded_dir: str | None = _setting(
        None, "directory of the embedded redis-server; unset: a private temporary one"
    )
    embedded_persistence: bool = _setting(
        False, "let the embedded redis-server keep an append-only file in embedded_dir"
    )
    embedded_maxmemory: str | None = _setting(
        None, "maxmemory of the embedded redis-server, e.g. 256mb"
    )
    l1_max_entries: int = _setting(
        100_000, "most entries the node's L1 cache holds", minimum=0, maximum=100_000_000
    )
    l1_max_bytes: int = _setting(
        256 * 1024 * 1024, "most bytes of values the L1 cache holds", minimum=0, maximum=1 << 40
    )
    l1_eviction: str = _setting("lru", "L1 eviction policy", choices=("lru", "lfu"))
    l1_max_ttl_ms: int = _setting(
        60_000, "longest an entry lives in L1 before L2 is asked again", minimum=1,
        maximum=86_400_000,
    )  # fmt: skip
    cache_default_ttl_ms: int = _setting(
        3_600_000, "L2 TTL of cache.set/fill without ttl_ms", minimum=1, maximum=2**47
    )
    cache_ttl_jitter_percent: int = _setting(
        5, "L2 TTLs are shortened by up to this much so keys expire apart", minimum=0,
        maximum=50,
    )  # fmt: skip
    cache_stale_max_ms: int = _setting(
        300_000, "while Redis is down, serve L1 entries up to this old", minimum=0,
        maximum=86_400_000,
    )  # fmt: skip
    cache_probe_interval_ms: int = _setting(
        1000, "how often the invalidation feed is proven live", minimum=50, maximum=60_000
    )
    cache_warm_timeout_ms: int = _setting(
        10_000, "longest start-up waits for cache warming", minimum=0, maximum=600_000
    )
    cache_warm: tuple[WarmTarget, ...] = field(default=(), metadata={})
    lock_quorum_urls: str | None = _setting(
        None,
        "comma-separated URLs of independent Redis masters for Redlock; unset: locks use redis_url",
    )
    lock_retry_max_ms: int = _setting(
        200, "longest pause between a lock waiter's retries when no wake-up comes",
        minimum=1, maximum=60_000,
    )  # fmt: skip
    session_l1_ttl_ms: int = _setting(
        5000, "longest a session lives in a node's L1 (the bound on a lost revocation)",
        minimum=0, maximum=3_600_000,
    )  # fmt: skip
    session_l1_max_entries: int = _setting(
        100_000, "most sessions a node keeps in L1 (0: none)", minimum=0, maximum=100_000_000
    )
    session_touch_interval_ms: int = _setting(
        60_000, "at most one idle-expiry slide per session this often", minimum=0,
        maximum=86_400_000,
    )  # fmt: skip
    session_secret_file: str | None = _setting(
        None, "file holding a secret: session tokens are then digested by HMAC-SHA256"
    )
    presence_node_timeout_ms: int = _setting(
        15_000, "a node whose heartbeat stops this long has its presence entries removed",
        minimum=300, maximum=3_600_000,
    )  # fmt: skip
    presence_sweep_interval_ms: int = _setting(
        5000, "how often a node looks for dead nodes' presence entries", minimum=100,
        maximum=3_600_000,
    )  # fmt: skip
    presence_leave_grace_ms: int = _setting(
        0, "how long after its connection closes an entry leaves (absorbs reconnects)",
        minimum=0, maximum=600_000,
    )  # fmt: skip
    presence_max_tracked: int = _setting(
        10_000, "most presence entries one connection may track", minimum=1,
        maximum=10_000_000,
    )  # fmt: skip
    presence_max_meta_bytes: int = _setting(
        4096, "largest presence entry (key and meta, encoded)", minimum=64,
        maximum=1_048_576,
    )  # fmt: skip
    pubsub_max_subscriptions: int = _setting(
        1000, "most channels one connection may subscribe to (pub/sub; presence)", minimum=1,
        maximum=1_000_000,
    )  # fmt: skip
    ratelimit_timeout_ms: int = _setting(
        50, "longest a rate-limit check waits for Redis before its on_redis_down decides",
        minimum=1, maximum=60_000, reloadable=True,
    )  # fmt: skip
    ratelimit_max_log_limit: int = _setting(
        10_000, "largest limit sliding_window takes (it keeps one entry per unit in Redis)",
        minimum=1, maximum=1_000_000, reloadable=True,
    )  # fmt: skip
    ratelimit_denial_cache_entries: int = _setting(
        100_000, "most denied keys a node answers for itself until they may pass (0: none)",
        minimum=0, maximum=100_000_000,
    )  # fmt: skip
    ratelimit_local_max_keys: int = _setting(
        100_000, "most keys the on_redis_down = local limiter tracks", minimum=1,
        maximum=100_000_000,
    )  # fmt: skip
    ratelimit_rules: tuple[RateRule, ...] = field(default=(), metadata={"reloadable": True})
    policy: tuple[PolicyRule, ...] = field(default=DEFAULT_POLICY, metadata={"reloadable": True})
    config_file: str | None = field(default=None, metadata={})

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    def redacted_redis_url(self) -> str | None:
        return redact_url(self.redis_url) if self.redis_url else None


def redact_url(url: str) -> str:
    """The URL with any password (in the userinfo or a `password=` query) replaced."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")  # rpartition: a raw "@" in a password
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    if qmark:
        query = "&".join(
            f"{part.partition('=')[0]}=***"
            if part.partition("=")[0].lower() in ("password", "pass", "requirepass")
            else part
            for part in query.split("&")
        )
    return f"{scheme}://{netloc}{slash}{path}{qmark}{query}"


def scalar_settings() -> list[dataclasses.Field[Any]]:
    """Settings that flags and env can carry (everything but `policy`/`config_file`)."""
    return [f for f in dataclasses.fields(Config) if "help" in f.metadata]


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_config(
    flags: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from flags (already parsed, None = not given) and env."""
    flags = dict(flags or {})
    env = os.environ if env is None else env
    config_file = flags.pop("config", None) or env.get(env_name("config"))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        values.update(_read_toml(config_file))
        sources.update(dict.fromkeys(values, config_file))
    for setting in scalar_settings():
        raw_env = env.get(env_name(setting.name))
        if raw_env is not None and raw_env != "":
            values[setting.name] = _parse(setting, raw_env, env_name(setting.name))
            sources[setting.name] = env_name(setting.name)
        raw_flag = flags.get(setting.name)
        if raw_flag is not None:
            flag = "--" + setting.name.replace("_", "-")
            values[setting.name] = _parse(setting, raw_flag, flag)
            sources[setting.name] = flag
    unknown_flags = set(flags) - {s.name for s in scalar_settings()}
    if unknown_flags:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown_flags))}")
    if config_file:
        values["config_file"] = config_file
    config = Config(**values)
    return _validated(config, sources)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config_file: {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config_file: cannot read {path}: {exc}") from None
    known = {s.name: s for s in scalar_settings()}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        where = f"{path}: {key}"
        if key == "policy":
            values["policy"] = _parse_policy(raw, where)
        elif key == "cache_warm":
            values["cache_warm"] = _parse_warm(raw, where)
        elif key == "ratelimit_rules":
            values["ratelimit_rules"] = _parse_rate_rules(raw, where)
        elif key in known:
            values[key] = _check_type(known[key], raw, where)
        else:
            raise ConfigError(f"{key}: unknown setting in {path}")
    return values


def _field_type(setting: dataclasses.Field[Any]) -> type:
    text = str(setting.type)
    for candidate in (bool, int, str):
        if text.startswith(candidate.__name__):
            return candidate
    raise AssertionError(f"unsupported setting type {text}")


def _parse(setting: dataclasses.Field[Any], raw: str, where: str) -> Any:
    kind = _field_type(setting)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{setting.name}: expected true or false, got {raw!r} from {where}")
    if kind is int:
        base = 8 if setting.name == "socket_mode" else 10
        try:
            return int(raw.strip().replace("_", ""), base)
        except ValueError:
            raise ConfigError(
                f"{setting.name}: expected an integer, got {raw!r} from {where}"
            ) from None
    return raw


def _check_type(setting: dataclasses.Field[Any], raw: Any, where: str) -> Any:
    kind = _field_type(setting)
    if setting.name == "lock_quorum_urls" and isinstance(raw, list):
        if not all(isinstance(url, str) for url in raw):
            raise ConfigError(f"lock_quorum_urls: expected a list of URLs in {where}")
        return ",".join(raw)
    if setting.name == "socket_mode" and isinstance(raw, str):
        return _parse(setting, raw, where)
    if type(raw) is not kind:
        raise ConfigError(
            f"{setting.name}: expected {kind.__name__}, got {type(raw).__name__} in {where}"
        )
    return raw


def _parse_policy(raw: Any, where: str) -> tuple[PolicyRule, ...]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ConfigError(f"policy: expected [[policy]] tables in {where}")
    rules = []
    for index, table in enumerate(raw):
        here = f"policy[{index}]"
        unknown = set(table) - {"uids", "gids", "namespaces", "methods"}
        if unknown:
            raise ConfigError(f"{here}: unknown keys {sorted(unknown)} in {where}")
        rules.append(
            PolicyRule(
                uids=_int_set(table.get("uids"), f"{here}.uids"),
                gids=_int_set(table.get("gids"), f"{here}.gids"),
                namespaces=_str_set(table.get("namespaces", ["default"]), f"{here}.namespaces"),
                methods=_str_set(table.get("methods", ["*"]), f"{here}.methods", METHOD_GROUPS),
            )
        )
    return tuple(rules)


def _parse_warm(raw: Any, where: str) -> tuple[WarmTarget, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"cache_warm: expected [[cache_warm]] tables in {where}")
    targets = []
    for index, table in enumerate(raw):
        here = f"cache_warm[{index}]"
        if set(table) - {"namespace", "prefix"}:
            raise ConfigError(
                f"{here}: unknown keys {sorted(set(table) - {'namespace', 'prefix'})}"
            )
        namespace, prefix = table.get("namespace", "default"), table.get("prefix")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigError(f"{here}.namespace: expected a namespace name")
        if not isinstance(prefix, str):
            raise ConfigError(f'{here}.prefix: expected a str ("" warms the namespace)')
        targets.append(WarmTarget(namespace, prefix))
    return tuple(targets)


_RULE_KEYS: Final = frozenset(
    {"name", "limit", "window_ms", "algorithm", "on_redis_down", "shadow", "overrides"}
)


def _parse_rate_rules(raw: Any, where: str) -> tuple[RateRule, ...]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ConfigError(f"ratelimit_rules: expected [[ratelimit_rules]] tables in {where}")
    rules: list[RateRule] = []
    for index, table in enumerate(raw):
        name = table.get("name")
        here = f"ratelimit_rules[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        unknown = set(table) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{here}: unknown keys {sorted(unknown)} in {where}")
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"{here}.name: expected a name of 1 to {MAX_NAME_BYTES} bytes")
        if any(rule.name == name for rule in rules):
            raise ConfigError(f"{here}.name: {name!r} is defined twice")
        limit = _parse_rate_limit(table, here)
        algorithm = table.get("algorithm", "sliding_window")
        if algorithm not in RATE_ALGORITHMS:
            raise ConfigError(
                f"{here}.algorithm: expected one of {', '.join(RATE_ALGORITHMS)}, got {algorithm!r}"
            )
        on_down = table.get("on_redis_down", "allow")
        if on_down not in ON_REDIS_DOWN:
            raise ConfigError(
                f"{here}.on_redis_down: expected one of {', '.join(ON_REDIS_DOWN)}, got {on_down!r}"
            )
        shadow = table.get("shadow", False)
        if type(shadow) is not bool:
            raise ConfigError(f"{here}.shadow: expected true or false")
        overrides_raw = table.get("overrides", {})
        if not isinstance(overrides_raw, dict):
            raise ConfigError(f'{here}.overrides: expected a table such as {{ "key" = 1000 }}')
        overrides: dict[str, RateLimit] = {}
        for key, value in overrides_raw.items():
            spot = f"{here}.overrides.{key}"
            if isinstance(value, int) and type(value) is not bool:
                value = {"limit": value}
            if not isinstance(value, dict) or set(value) - {"limit", "window_ms"}:
                raise ConfigError(f"{spot}: expected a limit, or {{ limit, window_ms }}")
            overrides[key] = _parse_rate_limit({"window_ms": limit.window_ms, **value}, spot)
        rules.append(
            RateRule(name, limit.limit, limit.window_ms, algorithm, on_down, shadow, overrides)
        )
    return tuple(rules)


def _parse_rate_limit(table: Mapping[str, Any], here: str) -> RateLimit:
    limit, window_ms = table.get("limit"), table.get("window_ms")
    if type(limit) is not int or not 1 <= limit <= 2**40:
        raise ConfigError(f"{here}.limit: expected an integer from 1 to {2**40}, got {limit!r}")
    if type(window_ms) is not int or not 1 <= window_ms <= MAX_WINDOW_MS:
        raise ConfigError(
            f"{here}.window_ms: expected an integer from 1 to {MAX_WINDOW_MS}, got {window_ms!r}"
        )
    return RateLimit(limit, window_ms)


def rate_limit_problem(
    algorithm: str, limit: int, window_ms: int, max_log_limit: int
) -> str | None:
    """Why `limit` per `window_ms` cannot be run by `algorithm`, or None."""
    if algorithm == "sliding_window" and limit > max_log_limit:
        return (
            f"limit {limit} is over ratelimit_max_log_limit ({max_log_limit}): sliding_window "
            f"keeps one Redis entry per unit; use sliding_counter (constant memory) or gcra"
        )
    if algorithm == "gcra" and limit > window_ms * 1000:
        return f"gcra needs at most one unit per microsecond: limit {limit} per {window_ms} ms"
    return None


def _int_set(raw: Any, name: str) -> frozenset[int] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(type(v) is int and v >= 0 for v in raw):
        raise ConfigError(f"{name}: expected a list of non-negative integers")
    return frozenset(raw)


def _str_set(raw: Any, name: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v for v in raw):
        raise ConfigError(f"{name}: expected a non-empty list of names")
    if allowed is not None and not set(raw) <= allowed:
        unknown = ", ".join(sorted(set(raw) - allowed))
        raise ConfigError(
            f"{name}: unknown method group {unknown}; known: {', '.join(sorted(allowed))}"
        )
    return frozenset(raw)


def _validated(config: Config, sources: Mapping[str, str] | None = None) -> Config:
    sources = sources or {}
    for setting in scalar_settings():
        value = getattr(config, setting.name)
        if value is None:
            continue
        meta = setting.metadata
        problem = None
        if meta["minimum"] is not None and value < meta["minimum"]:
            problem = f"must be at least {meta['minimum']}"
        elif meta["maximum"] is not None and value > meta["maximum"]:
            problem = f"must be at most {meta['maximum']}"
        elif meta["choices"] and value not in meta["choices"]:
            problem = f"must be one of {', '.join(meta['choices'])}"
        if problem is not None:
            where = f" from {sources[setting.name]}" if setting.name in sources else ""
            raise ConfigError(f"{setting.name}: {problem}, got {value!r}{where}")
    if not config.socket:
        raise ConfigError("socket: must not be empty")
    if not config.key_prefix:
        raise ConfigError("key_prefix: must not be empty")
    if is_cluster_url(config.redis_url or "") and (
        "{" in config.key_prefix or "}" in config.key_prefix
    ):
        # A brace in the prefix would become the hash tag of every key, in place of the
        # tags that keep each script's keys together and spread the rest over the slots.
        raise ConfigError("key_prefix: must not contain { or } with a Redis Cluster URL")
    if config.metrics_listen is not None:
        where = f" from {sources['metrics_listen']}" if "metrics_listen" in sources else ""
        try:
            parse_listen(config.metrics_listen)
        except ValueError as exc:
            raise ConfigError(
                f"metrics_listen: {exc}, got {config.metrics_listen!r}{where}"
            ) from None
    if not config.node_id or len(config.node_id.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"node_id: must be 1 to {MAX_NAME_BYTES} bytes")
    if config.redis_url is not None:
        try:
            check_redis_url(config.redis_url)
        except RedisUrlError as exc:
            raise ConfigError(f"redis_url: {exc}, got {redact_url(config.redis_url)!r}") from None
    for url in quorum_urls(config):
        if not url.startswith(PLAIN_SCHEMES):
            raise ConfigError(
                f"lock_quorum_urls: each must start with redis://, rediss:// or unix://, "
                f"got {redact_url(url)!r}"
            )
    if config.lock_quorum_urls is not None and len(quorum_urls(config)) < 3:
        raise ConfigError("lock_quorum_urls: Redlock needs at least 3 independent masters")
    for rule in config.ratelimit_rules:
        for key, limit in [("", RateLimit(rule.limit, rule.window_ms)), *rule.overrides.items()]:
            problem = rate_limit_problem(
                rule.algorithm, limit.limit, limit.window_ms, config.ratelimit_max_log_limit
            )
            if problem is not None:
                where = f".overrides.{key}" if key else ""
                raise ConfigError(f"ratelimit_rules ({rule.name}){where}: {problem}")
    if config.embedded_persistence and not config.embedded_dir:
        raise ConfigError(
            "embedded_persistence: needs embedded_dir, or the data would go to a "
            "temporary directory that is deleted on exit"
        )
    if config.embedded_maxmemory is not None and not _MAXMEMORY.fullmatch(
        config.embedded_maxmemory
    ):
        raise ConfigError(
            f"embedded_maxmemory: expected a size such as 256mb or 2gb, "
            f"got {config.embedded_maxmemory!r}"
        )
    for name in ("redis_password_file", "redis_tls_ca_file", "redis_tls_cert_file",
                 "redis_tls_key_file", "redis_sentinel_password_file"):  # fmt: skip
        _check_readable(name, getattr(config, name))
    _check_tls(config)
    if config.session_secret_file is not None:
        try:
            with open(config.session_secret_file, "rb") as fh:
                if len(fh.read().strip()) < 16:
                    raise ConfigError("session_secret_file: the secret must be 16 bytes or more")
        except OSError as exc:
            raise ConfigError(f"session_secret_file: cannot read it: {exc.strerror}") from None
    return config


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6addr]:PORT` for an IPv6 address) as (host, port); ValueError says
    what is wrong with it."""
    host, colon, port_text = value.rpartition(":")
    if not colon:
        raise ValueError("expected HOST:PORT, such as 127.0.0.1:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets, such as [::1]:9464")
    if not host or any(c.isspace() or c in "/[]" for c in host):
        # No empty host for "every interface": listening on all of them must be asked for.
        raise ValueError("expected a host name or address before the port (0.0.0.0 for all)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port_text)


def quorum_urls(config: Config) -> list[str]:
    if not config.lock_quorum_urls:
        return []
    return [url.strip() for url in config.lock_quorum_urls.split(",") if url.strip()]


def reload_changes(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """Apply the reloadable settings of `new` onto `old`.

    Returns the resulting config, the names applied, and the names that changed but
    need a restart.
    """
    applied: list[str] = []
    ignored: list[str] = []
    updates: dict[str, Any] = {}
    for setting in dataclasses.fields(Config):
        before, after = getattr(old, setting.name), getattr(new, setting.name)
        if before == after:
            continue
        if setting.metadata.get("reloadable"):
            updates[setting.name] = after
            applied.append(setting.name)
        else:
            ignored.append(setting.name)
    return dataclasses.replace(old, **updates), applied, ignored


def read_session_secret(config: Config) -> bytes | None:
    if config.session_secret_file is None:
        return None
    with open(config.session_secret_file, "rb") as fh:
        return fh.read().strip()


def _check_readable(name: str, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _check_tls(config: Config) -> None:
    tls_files = [
        name
        for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
        if getattr(config, name) is not None
    ]
    urls = [config.redis_url or "", *quorum_urls(config)]
    if tls_files and not any(uses_tls(url) for url in urls):
        raise ConfigError(f"{tls_files[0]}: set, but no Redis URL is rediss:// (TLS)")
    if (config.redis_tls_cert_file is None) != (config.redis_tls_key_file is None):
        raise ConfigError("redis_tls_cert_file and redis_tls_key_file: set both or neither")


def read_redis_password(config: Config) -> str | None:
    return read_secret(config.redis_password_file, config.redis_password)


def read_sentinel_password(config: Config) -> str | None:
    return read_secret(config.redis_sentinel_password_file, config.redis_sentinel_password)


def read_secret(path: str | None, value: str | None) -> str | None:
    """The secret in the file at `path` if one is named (it wins), else `value`."""
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    return value
