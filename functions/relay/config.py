"""Settings read once per instance from RELAY_* environment variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from relay.errors import ConfigError
from relay.naming import is_topic_path, split_pubsub_path
from relay.urls import credentials_refusal, safe_for_credentials

Backend = Literal["local", "kfp", "vertex"]
AuthKind = Literal["metadata", "iap", "service-account", "static", "none"]

BACKENDS: tuple[Backend, ...] = ("local", "kfp", "vertex")
AUTH_KINDS: tuple[AuthKind, ...] = ("metadata", "iap", "service-account", "static", "none")
# The repo's compiled catalog; deployed functions point RELAY_CATALOG_URI at a gs:// prefix instead.
DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Settings:
    """Everything a function instance needs to know, validated as a whole."""

    results_uri: str
    backend: Backend = "local"
    catalog_uri: str = str(DEFAULT_CATALOG)
    policy_uri: str = ""  # "" : `policy.yaml` in the catalog, optional there
    auth: AuthKind = "none"
    kfp_host: str = ""
    kfp_audience: str = ""
    kfp_experiment: str = "relay"
    credentials_file: str = ""
    static_token: str = field(default="", repr=False)
    vertex_project: str = ""
    vertex_location: str = ""
    vertex_pipeline_root: str = ""
    vertex_service_account: str = ""
    vertex_endpoint: str = ""
    notify_topic: str = ""
    # The project whose Cloud Trace and Cloud Logging hold the functions' traces (relay.trace): the Vertex AI
    # project, else the notify topic's, which deploy always sets ("" : a line names no Cloud Logging trace).
    project: str = ""
    max_event_age: float = 3600.0
    claim_lease: float = 600.0
    # How many runs one reconcile tick asks the backend about: N runs in flight are all asked within ceil(N / it).
    reconcile_per_tick: int = 50
    local_root: str = ".relay/local"
    audit_uri: str = ""  # "" : audit/ under the results (relay.audit.location)
    # How long the trail's oldest buffered entry waits for others before its batch is written (None: the store's
    # own, relay.adapters.audited.AGE). Longer: fewer requests, and more left to the exit's or a tick's flush.
    audit_age: float | None = None
    # The runs board (relay.board_store): what its page calls the deployment ("": its results location), and the
    # least time between two refreshes by the reconcile ticks.
    deployment_name: str = ""
    board_every: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse RELAY_* variables, reporting every missing or invalid one in one ConfigError."""
        problems: list[str] = []

        def get(name: str, default: str = "") -> str:
            return setting(env, name, default)

        def required(name: str, why: str) -> str:
            value = get(name)
            if not value:
                problems.append(f"RELAY_{name}: expected a value {why}, found nothing")
            return value

        def choice(name: str, options: tuple[str, ...], default: str) -> str:
            value = get(name, default)
            if value not in options:
                problems.append(f"RELAY_{name}: expected one of {', '.join(options)}, found {value!r}")
            return value

        def duration(name: str, default: float) -> float:
            raw = get(name)
            if not raw:
                return default
            seconds = parse_duration(raw)
            if seconds is None or seconds <= 0:
                problems.append(f"RELAY_{name}: expected a duration like 90s, 15m or 1h, found {raw!r}")
                return default
            return seconds

        def count(name: str, default: int) -> int:
            raw = get(name)
            if not raw:
                return default
            if not raw.isdecimal() or int(raw) < 1:
                problems.append(f"RELAY_{name}: expected a whole number, 1 or more, found {raw!r}")
                return default
            return int(raw)

        backend = choice("BACKEND", BACKENDS, "local")
        results_uri = required("RESULTS_URI", "(gs://bucket/prefix or a local folder) for run records")
        kfp_audience = get("KFP_AUDIENCE")
        auth = choice("AUTH", AUTH_KINDS, _default_auth(backend, kfp_audience))
        settings = {
            "kfp_host": get("KFP_HOST"),
            "credentials_file": get("CREDENTIALS_FILE"),
            "static_token": get("STATIC_TOKEN"),
            "vertex_project": get("VERTEX_PROJECT"),
            "vertex_location": get("VERTEX_LOCATION"),
            "vertex_pipeline_root": get("VERTEX_PIPELINE_ROOT"),
        }
        if backend == "kfp":
            settings["kfp_host"] = required("KFP_HOST", "(the KFP API URL) when RELAY_BACKEND=kfp")
        if backend == "vertex":
            for name in ("VERTEX_PROJECT", "VERTEX_LOCATION", "VERTEX_PIPELINE_ROOT"):
                settings[name.lower()] = required(name, "when RELAY_BACKEND=vertex")
        if auth == "iap" and not kfp_audience:
            problems.append("RELAY_KFP_AUDIENCE: expected the IAP client id when RELAY_AUTH=iap, found nothing")
        if auth == "service-account":
            settings["credentials_file"] = required("CREDENTIALS_FILE", "when RELAY_AUTH=service-account")
        if auth == "static":
            settings["static_token"] = required("STATIC_TOKEN", "when RELAY_AUTH=static")
        notify_topic = get("NOTIFY_TOPIC")
        if notify_topic and not is_topic_path(notify_topic):
            problems.append(f"RELAY_NOTIFY_TOPIC: expected projects/PROJECT/topics/TOPIC, found {notify_topic!r}")
        max_event_age = duration("MAX_EVENT_AGE", cls.max_event_age)
        claim_lease = duration("CLAIM_LEASE", cls.claim_lease)
        reconcile_per_tick = count("RECONCILE_PER_TICK", cls.reconcile_per_tick)
        board_every = duration("BOARD_EVERY", cls.board_every)
        audit_age = duration("AUDIT_AGE", 0.0) or None
        if claim_lease >= max_event_age:
            # A stale redelivery must still find a crashed claim's lease run out, to take it over and finish.
            problems.append(
                f"RELAY_CLAIM_LEASE: expected less than RELAY_MAX_EVENT_AGE ({max_event_age:.0f} s), "
                f"found {claim_lease:.0f} s"
            )
        for name, url in (("KFP_HOST", settings["kfp_host"]), ("VERTEX_ENDPOINT", get("VERTEX_ENDPOINT"))):
            if url and auth != "none" and not safe_for_credentials(url):
                problems.append(credentials_refusal(f"RELAY_{name}", repr(url)))
        if problems:
            raise ConfigError(problems)
        return cls(
            results_uri=results_uri.rstrip("/"),
            backend=cast(Backend, backend),
            catalog_uri=get("CATALOG_URI", str(DEFAULT_CATALOG)).rstrip("/"),
            policy_uri=get("POLICY_URI"),
            auth=cast(AuthKind, auth),
            kfp_audience=kfp_audience,
            kfp_experiment=get("KFP_EXPERIMENT", cls.kfp_experiment),
            vertex_service_account=get("VERTEX_SERVICE_ACCOUNT"),
            vertex_endpoint=get("VERTEX_ENDPOINT").rstrip("/"),
            notify_topic=notify_topic,
            project=trace_project(env),
            max_event_age=max_event_age,
            claim_lease=claim_lease,
            reconcile_per_tick=reconcile_per_tick,
            local_root=get("LOCAL_ROOT", cls.local_root),
            audit_uri=get("AUDIT_URI").rstrip("/"),
            audit_age=audit_age,
            deployment_name=get("DEPLOYMENT_NAME"),
            board_every=board_every,
            **settings,
        )


def trace_project(env: Mapping[str, str]) -> str:
    """The project whose Cloud Trace holds Relay's traces: RELAY_VERTEX_PROJECT, else the project of
    RELAY_NOTIFY_TOPIC ("" : none known). The functions and the CLI's trace links alike."""
    named = setting(env, "VERTEX_PROJECT")
    return named or (split_pubsub_path(setting(env, "NOTIFY_TOPIC")) or ("",))[0]


def setting(env: Mapping[str, str], name: str, default: str = "") -> str:
    """RELAY_<name> as the functions and the CLI both read it: stripped, and set but empty is unset (the default)."""
    return env.get(f"RELAY_{name}", "").strip() or default


def parse_duration(text: str) -> float | None:
    """Seconds in '90', '90s', '15m', '1h' or '2d'; None when it is not a duration."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _default_auth(backend: str, kfp_audience: str) -> str:
    if backend == "local":
        return "none"
    if backend == "kfp" and kfp_audience:
        return "iap"
    return "metadata"
