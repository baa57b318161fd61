"""Typed settings: every verb and process reads the same ``WANOTIFY_*`` variables."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wanotify.core.redis_urls import RedisUrlError, is_sentinel, parse_sentinel_url

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_TEMPLATES = DATA_DIR / "templates.yaml"

SANDBOX_SENDER: dict[str, Any] = {
    "name": "main",
    "phone_number_id": "106540352242922",
    "waba_id": "102290129340398",
    "display_phone_number": "+15550100001",
    "access_token": "sandbox-token-main",
    "mps": 80,
}


class SenderConfig(BaseModel):
    """One WhatsApp business phone number wanotify sends from."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=64)
    phone_number_id: str = Field(pattern=r"^[0-9]{5,20}$")
    waba_id: str = Field(pattern=r"^[0-9]{5,20}$")
    # The Graph API token: exactly one of these. ``access_token_file`` (e.g. a Docker or
    # Kubernetes secret) is re-read when it changes, so a rotated token needs no restart;
    # ``access_token_env`` names an environment variable. See ``wanotify.providers.tokens``.
    access_token: SecretStr | None = None
    access_token_file: str | None = Field(default=None, min_length=1)
    access_token_env: str | None = Field(default=None, min_length=1)
    display_phone_number: str | None = None
    mps: int = Field(default=80, ge=1, le=10_000)
    # Meta's pair limit: about one message per 6 s to one recipient, with bursts.
    pair_interval_s: float = Field(default=6.0, gt=0)
    pair_burst: int = Field(default=5, ge=1, le=100)
    # Portfolio-wide daily unique-recipient tier (250 / 2,000 / 10,000 / 100,000; None:
    # unlimited). Marketing may use `marketing_share` of it and waits when that is spent;
    # OTP and transactional count against it but are never held.
    daily_unique_limit: int | None = Field(default=None, ge=1)
    marketing_share: float = Field(default=0.8, ge=0, le=1)
    portfolio: str | None = Field(default=None, max_length=64)  # default: the waba_id

    @model_validator(mode="after")
    def _one_token_source(self) -> SenderConfig:
        given = [f for f in ("access_token", "access_token_file", "access_token_env")
                 if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                f"sender {self.name!r}: set exactly one of access_token, access_token_file,"
                f" access_token_env (got {', '.join(given) or 'none'})"
            )
        if self.access_token is not None and not self.access_token.get_secret_value().strip():
            raise ValueError(f"sender {self.name!r}: access_token is empty")
        if self.access_token_env is not None:
            value = os.environ.get(self.access_token_env, "").strip()
            if not value:
                raise ValueError(
                    f"sender {self.name!r}: access_token_env: environment variable"
                    f" {self.access_token_env} is not set or empty"
                )
            self.access_token = SecretStr(value)
        return self


# --- retention (WANOTIFY_RETENTION), parsed here so that a bad value stops every process

RETENTION_KINDS: dict[str, str] = {
    "otp": "OTP notifications (to, parameters, payload, fallback, metadata, wamids)",
    "transactional": "transactional notifications, and finished transactional campaigns' recipients",
    "marketing": "marketing notifications, and finished marketing campaigns' recipients",
    "inbound": "inbound messages (from, text, payload)",
    "webhooks": "raw webhook bodies, and status events that never matched a job",
    "rejected": "bodies of jobs rejected at the Celery intake",
    "opt_outs": "the number beside an opt-out (the keyed hash stays: the opt-out holds)",
}
DEFAULT_RETENTION: dict[str, timedelta | None] = {
    "otp": timedelta(hours=24),
    "transactional": timedelta(days=90),
    "marketing": timedelta(days=90),
    "inbound": timedelta(days=30),
    "webhooks": timedelta(days=7),
    "rejected": timedelta(days=30),
    "opt_outs": timedelta(days=365),
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ITEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def parse_retention(spec: str) -> dict[str, timedelta | None]:
    """``"otp=24h,transactional=90d"`` → a period per kind (None: ``never``); kinds not named
    keep their defaults. Raises ValueError naming the bad item."""
    out = dict(DEFAULT_RETENTION)
    seen: set[str] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if not eq or not key or not value:
            raise ValueError(f"WANOTIFY_RETENTION: {item!r} is not kind=period (e.g. otp=24h)")
        if key not in RETENTION_KINDS:
            raise ValueError(f"WANOTIFY_RETENTION: unknown kind {key!r} (known: {', '.join(RETENTION_KINDS)})")
        if key in seen:
            raise ValueError(f"WANOTIFY_RETENTION: {key!r} is given twice")
        seen.add(key)
        if value in ("never", "off", "forever"):
            out[key] = None
            continue
        m = _ITEM.match(value)
        if not m:
            raise ValueError(f"WANOTIFY_RETENTION: {key}={value!r}: expected a number and a unit"
                             " s, m, h, d or w (e.g. 24h, 90d), or 'never'")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"WANOTIFY_RETENTION: {key}={value!r} must be more than zero")
        out[key] = timedelta(seconds=seconds)
    return out


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_PERIOD_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class AccountLimit:
    """One WhatsApp Business Account's cap, shared by every number of it on every host."""

    count: float
    period_s: float

    @property
    def per_second(self) -> float:
        return self.count / self.period_s


def parse_waba_limits(raw: str | None) -> dict[str, AccountLimit]:
    """``{"102290129340398": "500/min"}`` (or ``@file``) → a cap per WABA id. Raises
    ValueError naming the bad entry."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = load_ref(raw)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise ValueError(f"WANOTIFY_WABA_LIMITS: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError('WANOTIFY_WABA_LIMITS: must be a JSON object of WABA id -> rate, e.g. {"1029…": "500/min"}')
    out: dict[str, AccountLimit] = {}
    for key, value in data.items():
        waba = str(key).strip()
        if not re.fullmatch(r"[0-9]{5,20}", waba):
            raise ValueError(f"WANOTIFY_WABA_LIMITS: {key!r} is not a WABA id (5 to 20 digits)")
        m = _RATE.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"WANOTIFY_WABA_LIMITS[{waba}]: {value!r} is not a rate such as '500/min' or '10/s'")
        count = float(m.group(1))
        if count <= 0:
            raise ValueError(f"WANOTIFY_WABA_LIMITS[{waba}]: {value!r} must be more than zero")
        out[waba] = AccountLimit(count, float(_PERIOD_S[m.group(2).lower()]))
    return out


def load_ref(value: str) -> Any:
    """Parse a JSON/YAML literal or an ``@path`` to a JSON/YAML file."""
    text = value.strip()
    if text.startswith("@"):
        text = Path(text[1:]).expanduser().read_text(encoding="utf-8")
    return yaml.safe_load(text)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WANOTIFY_", env_file=".env", extra="ignore", case_sensitive=False
    )

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/wanotify"
    redis_url: str = "redis://localhost:6379/0"  # or sentinel://host:port;sentinel://host:port
    redis_sentinel_master: str = "mymaster"
    graph_api_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v23.0"
    app_secret: SecretStr | None = None
    verify_token: SecretStr | None = None
    api_keys: SecretStr | None = None
    senders: str | None = None
    templates: str | None = None
    sms_url: str | None = None
    sms_from: str = "WANOTIFY"
    smtp_url: str | None = None
    email_from: str = "notifications@wanotify.local"
    quiet_hours: str = "21:00-09:00"  # marketing waits in the recipient's zone ("off": never)
    opt_out_keywords: str = "STOP,STOP ALL,STOPALL,UNSUBSCRIBE,CANCEL,END,QUIT,OPT OUT,OPTOUT"
    opt_in_keywords: str = "START,UNSTOP,SUBSCRIBE,OPT IN,OPTIN"
    otp_delivery_deadline_s: float = Field(default=30.0, gt=0)
    # Privacy (privacy.py): how long personal fields are kept per kind, and the key of the
    # personal-data hashes (unset: a random key generated in the database; see the README).
    retention: str = "otp=24h,transactional=90d,marketing=90d,inbound=30d,webhooks=7d,rejected=30d"
    pii_hash_key: SecretStr | None = None
    purge_interval_s: float = Field(default=3600.0, gt=0)

    # Delivery machinery (not part of the stable surface, but configurable).
    http_timeout_s: float = Field(default=10.0, gt=0)
    send_concurrency: int = Field(default=256, ge=1, le=4096)
    # Jobs one worker process holds between release and settlement, all senders together:
    # its memory stays flat whatever the send rate (a process does not hoard a backlog that
    # other workers could send). 2,000 covers ~4,000 sends/s at 50 ms answers on 2 cores.
    max_in_flight: int = Field(default=2_000, ge=1)
    dispatch_slice_s: float = Field(default=10.0, gt=0)
    reserve_horizon_ms: float = Field(default=100.0, ge=0, le=2000)
    lease_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)
    broker_visibility_timeout_s: int = Field(default=90, ge=5)
    # Share of each number's limit used. Sends leave on time, but arrive with the jitter of a
    # busy host (40-60 ms measured on 2 shared cores): 5% keeps every sliding second under
    # Meta's limit through it (at 0.975, some runs drew 130429 answers).
    pacing_safety: float = Field(default=0.95, gt=0.1, le=1.0)
    # JSON object (or @file) of WABA id -> rate ("500/min", "10/s"): a cap shared by every
    # number of that account on every host. None by default (Meta's pages state none today).
    waba_limits: str | None = None
    # A worker of every queue stores the notify queue's jobs in a child process of its own
    # at a lower priority (wanotify.worker.intake_process). Off by default: OTPs published
    # to the same queue wait longer, and the sends gain nothing measurable since the puller.
    intake_process: bool = False
    worker_metrics_port: int = Field(default=9809, ge=0, le=65535)  # 0: off
    worker_metrics_addr: str = "127.0.0.1"  # 0.0.0.0 to let Prometheus on another host scrape
    flower_basic_auth: SecretStr | None = None  # "user:password[,user2:password2]"
    flower_db: str | None = None  # Flower's persistent state file (default: in state_dir)
    # Where processes keep their own files (beat's schedule, Flower's state and generated
    # password): never the current folder, which may be a checkout or a read-only /app.
    state_dir: Path | None = None
    log_level: str = "INFO"
    log_json: bool = True

    # Sandbox behaviour.
    sandbox_latency_ms: float = Field(default=0.0, ge=0)
    sandbox_failures: str | None = None
    sandbox_webhook_delay_ms: float = Field(default=150.0, ge=0)
    sandbox_read_ratio: float = Field(default=0.5, ge=0, le=1)
    sandbox_duplicate_ratio: float = Field(default=0.05, ge=0, le=1)
    sandbox_reorder_ratio: float = Field(default=0.05, ge=0, le=1)
    # JSON (or @file) map of sender name or token fingerprint ("sha256:…") to when that token
    # expires (ISO time or unix seconds): the sandbox then answers 190/463 as Meta does.
    sandbox_token_expiry: str | None = None

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        parse_retention(v)  # a clear error at start-up, naming the bad item
        return v

    @field_validator("waba_limits")
    @classmethod
    def _waba_limits(cls, v: str | None) -> str | None:
        parse_waba_limits(v)
        return v

    @cached_property
    def waba_limit_map(self) -> dict[str, AccountLimit]:
        return parse_waba_limits(self.waba_limits)

    @property
    def retention_periods(self) -> dict[str, timedelta | None]:
        return parse_retention(self.retention)

    @model_validator(mode="after")
    def _redis_url(self) -> Settings:
        if is_sentinel(self.redis_url):
            try:
                parse_sentinel_url(self.redis_url, self.redis_sentinel_master)
            except RedisUrlError as exc:
                raise ValueError(f"WANOTIFY_REDIS_URL: {exc}") from None
        elif self.redis_url.split("://", 1)[0].lower() not in ("redis", "rediss", "unix"):
            raise ValueError("WANOTIFY_REDIS_URL: must be redis://, rediss://, unix:// or "
                             "sentinel://host:port[;sentinel://host:port...]")
        return self

    @field_validator("graph_api_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @cached_property
    def sender_list(self) -> list[SenderConfig]:
        raw = load_ref(self.senders) if self.senders else [SANDBOX_SENDER]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise ValueError("WANOTIFY_SENDERS must be a non-empty JSON list of senders")
        senders = [SenderConfig.model_validate(item) for item in raw]
        names = [s.name for s in senders]
        if len(set(names)) != len(names):
            raise ValueError("WANOTIFY_SENDERS: sender names must be unique")
        return senders

    @cached_property
    def sender_map(self) -> dict[str, SenderConfig]:
        return {s.name: s for s in self.sender_list}

    def sender(self, name: str | None) -> SenderConfig:
        if name is None:
            return self.sender_list[0]
        return self.sender_map[name]

    @property
    def templates_path(self) -> Path:
        if self.templates:
            return Path(self.templates.lstrip("@")).expanduser()
        return DEFAULT_TEMPLATES

    @cached_property
    def api_key_set(self) -> frozenset[str]:
        if self.api_keys is None:
            return frozenset()
        return frozenset(
            k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()
        )

    @property
    def state_path(self) -> Path:
        """``WANOTIFY_STATE_DIR``, else ``$XDG_STATE_HOME/wanotify`` (``~/.local/state``)."""
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "wanotify"

    def ensure_state_path(self) -> Path:
        path = self.state_path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    @property
    def graph_base(self) -> str:
        return f"{self.graph_api_url}/{self.graph_api_version}"

    def sandbox_failure_rules(self) -> list[dict[str, Any]] | None:
        if not self.sandbox_failures:
            return None
        raw = load_ref(self.sandbox_failures)
        return list(raw) if raw is not None else []


def describe_invalid(exc: ValidationError) -> str:
    """A settings error as the user set it: each problem under its variable's name
    (``WANOTIFY_PACING_SAFETY: Input should be a valid number``), joined by "; "."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err.get("loc") else ""
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        name = f"{Settings.model_config.get('env_prefix', '')}{field}".upper()
        lines.append(f"{name}: {msg}" if field and not msg.startswith(name) else msg)
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()

