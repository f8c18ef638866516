"""Secrets and production defaults (settings.py): the placeholder signing key is refused as soon
as anyone but this machine can reach the API or its links; any key set has a minimum length;
production needs the public URL of the links."""

from __future__ import annotations

import pytest

from settings import DEV_SECRET_KEY, MIN_SECRET_KEY_LENGTH, Settings

GOOD = "k" * MIN_SECRET_KEY_LENGTH


def test_the_placeholder_is_fine_for_a_keyless_api_on_loopback() -> None:
    settings = Settings()
    assert settings.secret_key == DEV_SECRET_KEY and settings.old_secret_keys == []
    Settings(public_url="http://localhost:8000")


@pytest.mark.parametrize(
    "exposure",
    [
        {"api_keys": "k1"},  # keys: the API is meant to be reached from elsewhere
        {"api_keys": "k1", "api_host": "0.0.0.0"},
        {"public_url": "https://drip.example.com"},  # links reach recipients
        {"public_url": "http://192.0.2.10:8000"},
        {"env": "production", "public_url": "https://drip.example.com"},
    ],
)
def test_the_placeholder_is_refused_wherever_the_api_or_its_links_are_reachable(
    exposure: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match="DRIP_SECRET_KEY is the development placeholder"):
        Settings(**exposure)  # type: ignore[arg-type]
    Settings(**exposure, secret_key=GOOD)  # type: ignore[arg-type]


def test_a_placeholder_old_key_is_refused_too() -> None:
    with pytest.raises(ValueError, match="DRIP_OLD_SECRET_KEYS is the development placeholder"):
        Settings(api_keys="k1", secret_key=GOOD, old_secret_keys=DEV_SECRET_KEY)  # type: ignore[arg-type]


def test_keys_have_a_minimum_length() -> None:
    with pytest.raises(ValueError, match="DRIP_SECRET_KEY is too short"):
        Settings(secret_key="k" * (MIN_SECRET_KEY_LENGTH - 1))
    with pytest.raises(ValueError, match="DRIP_OLD_SECRET_KEYS is too short"):
        Settings(secret_key=GOOD, old_secret_keys=f"{'o' * 40},short")  # type: ignore[arg-type]
    settings = Settings(secret_key=GOOD, old_secret_keys=f"{'o' * 40}, {'p' * 32}")  # type: ignore[arg-type]
    assert settings.old_secret_keys == ["o" * 40, "p" * 32]


def test_production_requires_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="DRIP_PUBLIC_URL must be set in production"):
        Settings(env="production", secret_key=GOOD, api_keys="k1")  # type: ignore[arg-type]
    # From the environment, as a deployment sets it.
    monkeypatch.setenv("DRIP_ENV", "production")
    monkeypatch.setenv("DRIP_SECRET_KEY", GOOD)
    monkeypatch.setenv("DRIP_PUBLIC_URL", "")
    with pytest.raises(ValueError, match="DRIP_PUBLIC_URL"):
        Settings()
    monkeypatch.setenv("DRIP_PUBLIC_URL", "https://drip.example.com/")
    assert Settings().public_url == "https://drip.example.com"
