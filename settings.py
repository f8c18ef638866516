"""All configuration, from `DRIP_*` environment variables (and the standard `TEMPORAL_*` ones)."""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.enrollment import BATCH_TASK_QUEUE
from domain.journey import SEND_TASK_QUEUE, TASK_QUEUE
from domain.reputation import ReputationLimits

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "dev-insecure-secret-change-me"
MIN_SECRET_KEY_LENGTH = 32  # `openssl rand -hex 32` gives 64

CommaList = Annotated[list[str], NoDecode]
URL_SCHEMES = {
    "public_url": ("http", "https"),
    "smtp_url": ("smtp", "smtps"),
    "database_url": ("sqlite", "postgresql", "postgres"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIP_", extra="ignore")

    env: Literal["development", "production"] = "development"  # production: no placeholders
    # Relative to the working directory at start-up (the repository under `make run`, /app in
    # the image), never to where the package is installed (site-packages for a wheel install).
    var_dir: Path = Field(default_factory=lambda: Path.cwd() / "var")
    database_url: str = ""  # default: SQLite file under var/

    # Without DRIP_API_KEYS the API answers only on loopback and refuses to start on any other
    # DRIP_API_HOST (api/security.py). In production set both: the host uvicorn binds, and keys.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # base of tracking/unsubscribe links; default: the API's own address
    api_keys: CommaList = Field(default_factory=list)
    log_level: str = "INFO"

    # Temporal: the standard variables, not DRIP_-prefixed (TLS, API key and profiles are read
    # by the SDK's envconfig in temporal_client.py).
    temporal_address: str = Field("127.0.0.1:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    # Where the dashboard links each journey's workflow (the dev server's Web UI by default).
    temporal_ui_url: str = "http://127.0.0.1:8233"
    worker_metrics_port: int | None = None

    # Signs tracking and unsubscribe links (mail/tokens.py). To rotate: the new key here, the
    # previous ones in DRIP_OLD_SECRET_KEYS, which still verify links already sent (never sign).
    secret_key: str = DEV_SECRET_KEY
    old_secret_keys: CommaList = Field(default_factory=list)
    # Keys the hash an erased address's suppression is kept as (storage/suppression.py); unset:
    # the secret key (and the old ones, whose hashes keep matching).
    suppression_hash_key: str | None = None
    from_email: str = "drip@localhost"
    smtp_url: str | None = None  # e.g. smtp://user:pass@host:587 ; unset: .eml files in var/outbox
    smtp_timeout_seconds: float = 30.0
    # The provider the SMTP relay is, for its correlation header (mail/message.py); unset: from
    # the relay's host name (smtp.sendgrid.net...), "none" for a plain relay.
    smtp_provider: Literal["sendgrid", "mailgun", "postmark", "ses", "resend", "none"] | None = None
    send_rate: float | None = None  # messages/second across all workers
    # Hard limit on one SMTP hand-off; below the send activity's 2-minute timeout (workflows/).
    send_deadline_seconds: float = 60.0
    # A message whose attempt died past the point of no return (the server may have it):
    # "hold" records it uncertain and never sends it twice; "resend" sends it again and never
    # loses it (docs/reliability.md).
    uncertain_sends: Literal["hold", "resend"] = "hold"
    # Reputation guard (storage/reputation.py): a campaign over either rate pauses itself.
    max_complaint_rate: float = 0.003
    max_bounce_rate: float = 0.05
    reputation_min_sent: int = 100

    tracking: bool = True
    # Hits of one open pixel or tracked link recorded per minute (api/hit_limit.py); the rest
    # are answered, counted in a metric and not stored.
    tracking_hits_per_minute: int = Field(10, ge=1)
    # How long a one-click unsubscribe POST waits out a failing database before answering 503
    # (api/routes/tracking.py): mailbox providers do not retry it.
    unsubscribe_retry_seconds: float = 120.0
    # Optional mailto in List-Unsubscribe, besides the one-click HTTPS URL (e.g. unsub@example.com).
    unsubscribe_mailto: str | None = None
    # Automated-hit classification (mail/classify.py): such hits are stored with machine=true.
    machine_after_send_seconds: float = 5.0  # a hit sooner than this after the send
    machine_burst_links: int = 2  # this many distinct links of one message ...
    machine_burst_seconds: float = 2.0  # ... hit within this window
    proxy_opens_are_human: bool = True  # Gmail/Yahoo image-proxy opens count as real opens

    # Provider webhooks: each endpoint is off until its secret is set.
    sendgrid_webhook_public_key: str | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: str | None = None
    mailgun_webhook_signing_key: str | None = None
    ses_topic_arns: CommaList = Field(default_factory=list)
    resend_webhook_secret: str | None = None

    # Journey events out: subscriptions whose URL resolves to a private, loopback or link-local
    # address are refused (and so are attempts to such an address) unless this is true.
    webhook_allow_private: bool = False

    # A journey whose workflow history passes this many events is logged and counted
    # (observability/history.py); Temporal terminates a workflow at 51,200.
    journey_history_alert_events: int = Field(10_000, ge=1)

    # Task queues of this deployment (tests give each test its own).
    task_queue: str = TASK_QUEUE
    send_task_queue: str = SEND_TASK_QUEUE
    batch_task_queue: str = BATCH_TASK_QUEUE
    workflow_task_polls: int = Field(8, ge=2)  # journey worker's workflow task pollers
    workflow_cache_size: int = Field(1000, ge=0)  # journeys kept in the worker's memory
    # The production worker's journey runner: `unsandboxed` (the cheapest per task), `passthrough`
    # (the sandbox, the workflow modules imported once) or `isolated` (re-imported per run).
    # Tests and replays always run isolated (docs/performance.md).
    workflow_sandbox: Literal["unsandboxed", "passthrough", "isolated"] = "unsandboxed"

    # Request bodies, counted while they stream in (chunked ones too): a 413 past the limit.
    max_body_bytes: int = Field(32 * 2**20, ge=1024)  # JSON calls: 10,000 recipients fit
    max_upload_bytes: int = Field(512 * 2**20, ge=1024)  # CSV imports: 1,000,000 rows fit

    # How often the API re-drives accepted work that has not reached Temporal yet.
    outbox_interval_seconds: float = 5.0
    # Enroll calls with more recipients than this are stored and run as a batch job (202).
    sync_enroll_limit: int = 1000
    # How long a paused journey waits before re-reading the campaign status itself.
    pause_recheck_seconds: float = 3600.0
    # Start the time-skipping server of POST /api/campaigns/{id}/simulate with the API, so the
    # first rehearsal finds it warm (false: the first one starts it).
    simulation_warm: bool = True

    @field_validator("api_keys", "ses_topic_arns", "old_secret_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("public_url", "smtp_url", "database_url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A URL of a scheme this setting can use, so a typo fails at start, naming it."""
        if not value:
            return value
        schemes = URL_SCHEMES[info.field_name or ""]
        parts = urlsplit(value)
        scheme = parts.scheme.split("+", 1)[0]
        if scheme not in schemes or not (parts.netloc or scheme == "sqlite"):
            raise ValueError(f"{value!r} is not a {' or '.join(schemes)} URL")
        return value

    @property
    def journey_send_queue(self) -> str:
        """The queue new journeys' sends run on. Their own, so the server hands a send to the
        worker whose workflow task scheduled it (eager activity execution: no trip through
        matching, about 4 ms of server CPU a message, docs/performance.md); the send queue
        when DRIP_SEND_RATE has the server pace sends, which it does not do for eager ones."""
        return self.send_task_queue if self.send_rate else self.task_queue

    @field_validator("send_rate", "worker_metrics_port", "smtp_provider", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _secrets_and_production(self) -> Settings:
        """Before the defaults below: an unset DRIP_PUBLIC_URL must still look unset here."""
        # Anyone but this machine may reach the API or its links: no placeholder secret. (A
        # keyless API on a non-loopback DRIP_API_HOST refuses to start: api/security.py.)
        public_host = urlsplit(self.public_url).hostname if self.public_url else None
        exposed = (
            self.env == "production"
            or bool(self.api_keys)
            or (public_host is not None and not is_loopback(public_host))
        )
        for name, key in [("DRIP_SECRET_KEY", self.secret_key)] + [
            ("DRIP_OLD_SECRET_KEYS", old) for old in self.old_secret_keys
        ]:
            if key == DEV_SECRET_KEY:
                if exposed:
                    raise ValueError(
                        f"{name} is the development placeholder: set a random secret (openssl "
                        "rand -hex 32) whenever DRIP_API_KEYS is set, DRIP_PUBLIC_URL is not "
                        "loopback or DRIP_ENV=production"
                    )
            elif len(key) < MIN_SECRET_KEY_LENGTH:
                raise ValueError(
                    f"{name} is too short: at least {MIN_SECRET_KEY_LENGTH} characters "
                    "(openssl rand -hex 32)"
                )
        if self.env == "production" and not self.public_url:
            raise ValueError(
                "DRIP_PUBLIC_URL must be set in production: the public https base of tracking "
                "and unsubscribe links (the API's own address is not reachable by recipients)"
            )
        return self

    @model_validator(mode="after")
    def _defaults_and_guards(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'drip.db'}"
        elif self.database_url.startswith(("postgresql://", "postgres://")):
            # One driver for PostgreSQL everywhere: psycopg 3.
            self.database_url = "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        if not self.public_url:
            self.public_url = f"http://{self.api_host}:{self.api_port}"
        self.public_url = self.public_url.rstrip("/")
        return self

    @property
    def reputation_limits(self) -> ReputationLimits:
        return ReputationLimits(
            self.max_complaint_rate, self.max_bounce_rate, self.reputation_min_sent
        )

    @property
    def suppression_keys(self) -> list[str]:
        if self.suppression_hash_key:
            return [self.suppression_hash_key]
        return [self.secret_key, *self.old_secret_keys]

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"


def is_loopback(host: str | None) -> bool:
    """A name or address that only ever means this machine (`localhost`, `*.localhost`: RFC
    6761, resolved by browsers themselves, so no DNS can point them elsewhere)."""
    if not host:
        return False
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
