"""One settings class, read from ``FLYWHEEL_*`` environment variables.

It is built once at an edge (``flywheel.init``, the CLI, the server factory)
and passed down; no other module reads the environment. Each field's
description is its documentation (``docs/configuration.md`` is checked
against it by a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "PII_DETECTORS", "SECRET_DETECTORS", "Settings"]

DEFAULT_DATABASE_URL = "sqlite:///.flywheel/flywheel.db"

SECRET_DETECTORS = ("api_key", "bearer_token", "jwt", "private_key", "credit_card")
PII_DETECTORS = ("email", "phone", "ip_address")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the store: a SQLite file (the embedded default) "
        "or postgresql+psycopg://user@host/db.",
    )
    url: str | None = Field(
        None,
        description="Where the SDK sends events (a `flywheel serve` base URL). "
        "Unset: the SDK writes to the local store directly.",
    )
    api_key: str | None = Field(None, description="Key the SDK and CLI present to the server.")
    session_secret: SecretStr | None = Field(
        None,
        description="Signs reviewers' session cookies and CSRF tokens; unset: one is generated "
        "once and kept in FLYWHEEL_HOME/session_secret (shared by the server's workers).",
    )
    home: Path = Field(Path(".flywheel"), description="Folder for local state: the SDK's disk spool, caches.")
    teacher_model: str | None = Field(
        None,
        description="A teacher model (openai:MODEL[@BASE_URL]) that writes the prompt-rules "
        "strategy's rules from failure clusters; unset: the rules come from templates.",
    )
    auto_migrate: bool = Field(
        True, description="Bring the database schema up to date when a store is opened."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite fsync policy. FULL: an acknowledged write survives power loss; "
        "NORMAL: it survives a process crash only.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request body the server accepts (413 above), as sent and, for a "
        "gzip body, after decompression too.",
    )
    max_batch_events: int = Field(
        10_000, ge=1, description="Most events in one POST /v1/events batch (413 above)."
    )
    max_field_chars: int = Field(
        1_000_000,
        ge=64,
        description="Longest text (in characters) of any field in an event; "
        "an event with a longer one is rejected with a per-event error.",
    )
    redact: list[str] = Field(
        default_factory=lambda: list(SECRET_DETECTORS),
        description="Named detectors whose matches are redacted before storing. Secrets by "
        f"default; add PII detectors ({', '.join(PII_DETECTORS)}) as needed.",
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description='Extra redaction rules as {"name": "regex"}; matches become [REDACTED:name].',
    )
    prices: Path | None = Field(
        None,
        description="A JSON or YAML file of model prices in USD per 1M tokens, "
        '{"model-prefix": {"input": 0.15, "output": 0.6}} or {"model-prefix": [0.15, 0.6]}; '
        "its entries override and extend the built-in list prices with which ingestion "
        "computes the cost of each llm_call that reports tokens but no cost.",
    )
    sdk_queue_size: int = Field(
        100_000, ge=10, description="Events the SDK holds in memory before spilling to the spool."
    )
    sdk_batch_size: int = Field(1000, ge=1, description="Most events the SDK sends in one request.")
    sdk_flush_interval: float = Field(
        0.5, gt=0, description="Seconds between background flushes of the SDK's queue."
    )
    sdk_timeout: float = Field(10.0, gt=0, description="HTTP timeout of one SDK request, seconds.")
    sdk_quarantine_attempts: int = Field(
        10, ge=1, description="5xx answers to one batch after which the SDK may quarantine it (with the age)."
    )
    sdk_quarantine_after: float = Field(
        600.0,
        ge=0,
        description="Seconds a batch must have been refused with 5xx answers (as often as "
        "FLYWHEEL_SDK_QUARANTINE_ATTEMPTS) before the SDK moves it to the dead-letter file, "
        "provided the server's /healthz answers; until then it is retried.",
    )
    auth: bool = Field(
        True,
        description="Require an API key on every endpoint but /healthz, /openapi.json and /docs "
        "(the description of the API, the same for every server). Can be turned off only for "
        "a server listening on a loopback address.",
    )
    host: str = Field("127.0.0.1", description="Address `flywheel serve` listens on.")
    port: int = Field(8420, ge=1, le=65535, description="Port `flywheel serve` listens on.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers to besides localhost, FLYWHEEL_HOST and any IP "
        'address (a defence against DNS rebinding), e.g. ["flywheel.example.com"]; ".example.com" '
        'admits its subdomains, ["*"] any name. Another name is refused with a 403.',
    )

    @field_validator("redact")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        known = set(SECRET_DETECTORS) | set(PII_DETECTORS)
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown redaction detector(s) {unknown}; known: {sorted(known)}")
        return value

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"
