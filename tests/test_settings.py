"""The server's settings are typed: a typo in DRIP_ENV or a URL fails at start, naming it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from settings import Settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env", "prod"),
        ("public_url", "drip.example.com"),
        ("smtp_url", "smpt://relay.example.com:587"),
        ("database_url", "mysql://db/drip"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


def test_good_values_are_kept() -> None:
    settings = Settings(
        env="production",
        secret_key="s" * 32,
        public_url="https://drip.example.com/",
        smtp_url="smtps://user:pass@relay.example.com:465",
        database_url="postgresql://db.example.com/drip",
    )
    assert settings.public_url == "https://drip.example.com"
    assert settings.database_url == "postgresql+psycopg://db.example.com/drip"
