"""The `drip` command line's own settings: where the API is and the key to send. Never the
server's settings (settings.py): a client needs no database, no secrets, and must work on a
machine configured for production (DRIP_ENV=production without a secret key)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, TypeAdapter, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_URL = TypeAdapter(AnyHttpUrl)


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIP_", extra="ignore")

    api_url: str = ""  # default: http://{api_host}:{api_port}, as `make run` serves it
    api_key: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000

    @model_validator(mode="after")
    def _default_url(self) -> ClientSettings:
        if not self.api_url:
            host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
            self.api_url = f"http://{host}:{self.api_port}"
        _URL.validate_python(self.api_url)  # an http(s) URL, or a ValidationError naming it
        self.api_url = self.api_url.rstrip("/")
        return self
