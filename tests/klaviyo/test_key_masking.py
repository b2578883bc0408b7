"""A private key passed in the wrong place never appears in a ConfigurationError."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from klaviyo_signal import Client, ConfigurationError
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

SECRET = PRIVATE_KEY.removeprefix("pk_")


def _refused(build: Callable[[], Any]) -> str:
    """Build, expect ConfigurationError, check the key is absent; return the message."""
    with pytest.raises(ConfigurationError) as caught:
        build()
    for text in (str(caught.value), repr(caught.value)):
        assert PRIVATE_KEY not in text
        assert SECRET not in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    return str(caught.value)


def _payload(public: str, private: str) -> dict[str, Any]:
    return {"name": "klaviyo", "config": {"public_api_key": public, "private_api_key": private}}


def test_swapped_positional_keys_say_to_pass_the_public_key_first() -> None:
    """Client(private, public) says the first argument looks like a private key, masked."""
    text = _refused(lambda: Client(PRIVATE_KEY, PUBLIC_KEY))
    assert "looks like a private key" in text
    assert "pass the public key (Site ID) first" in text


def test_swapped_environment_variables_say_to_swap_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swapped KLAVIYO_* variables name the variables and say to swap them, key masked."""
    monkeypatch.setenv("KLAVIYO_PUBLIC_API_KEY", PRIVATE_KEY)
    monkeypatch.setenv("KLAVIYO_PRIVATE_API_KEY", PUBLIC_KEY)
    text = _refused(Client.from_env)
    assert "KLAVIYO_PUBLIC_API_KEY looks like a private key" in text
    assert "swap the two values" in text


def test_key_in_klaviyo_base_url_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private key in KLAVIYO_BASE_URL is shown masked, with what to do."""
    monkeypatch.setenv("KLAVIYO_PUBLIC_API_KEY", PUBLIC_KEY)
    monkeypatch.setenv("KLAVIYO_PRIVATE_API_KEY", PRIVATE_KEY)
    monkeypatch.setenv("KLAVIYO_BASE_URL", PRIVATE_KEY)
    text = _refused(Client.from_env)
    assert "base_url: 'pk_***'" in text
    assert "the private key goes only in Client's second argument" in text


def test_swapped_install_payload_says_to_swap_the_values() -> None:
    """A payload with the keys swapped names the config fields, key masked."""
    text = _refused(lambda: Client.from_install(_payload(PRIVATE_KEY, PUBLIC_KEY)))
    assert "config.public_api_key looks like a private key" in text
    assert "swap the two values" in text


@pytest.mark.parametrize("field", ["variant", "delivery_mode"])
def test_key_in_other_install_fields_is_masked(field: str) -> None:
    """A private key as the payload's variant or delivery_mode is shown masked."""
    payload = {**_payload(PUBLIC_KEY, PRIVATE_KEY), field: PRIVATE_KEY}
    text = _refused(lambda: Client.from_install(payload))
    assert "'pk_***'" in text


@pytest.mark.parametrize(
    ("options", "start"),
    [
        ({"base_url": PRIVATE_KEY}, "base_url: 'pk_***'"),
        ({"base_url": f"http://example.com/{PRIVATE_KEY}"}, "base_url: '***'"),
        ({"revision": PRIVATE_KEY}, "revision: 'pk_***'"),
        ({"rate_limits": {PRIVATE_KEY: (1, 2)}}, "rate_limits: key 'pk_***'"),
        ({"rate_limits": PRIVATE_KEY}, "rate_limits: expected a mapping"),
        ({"rate_limits": {"POST /api/events": (PRIVATE_KEY, 1)}}, "rate_limits['POST /api"),
        ({"timeout": PRIVATE_KEY}, "timeout: must be a number above 0, got 'pk_***'"),
        ({"max_queue_size": PRIVATE_KEY}, "max_queue_size: must be a whole number >= 1"),
        ({"max_retries": PRIVATE_KEY}, "max_retries: must be a whole number >= 0"),
        ({"block_on_full": PRIVATE_KEY}, "block_on_full: must be True or False"),
        ({"on_delivery": PRIVATE_KEY}, "on_delivery: must be a function or None"),
        ({"default_phone_region": PRIVATE_KEY}, "default_phone_region: 'pk_***'"),
    ],
)
def test_key_passed_as_an_option_is_masked(options: dict[str, Any], start: str) -> None:
    """A private key passed as another option is shown masked, with what to do."""
    text = _refused(lambda: Client(PUBLIC_KEY, PRIVATE_KEY, **options))
    assert text.startswith(start)
    assert "the private key goes only in Client's second argument" in text


def test_other_values_are_still_quoted() -> None:
    """A value that cannot be a key is still quoted, so the message names the mistake."""
    text = _refused(lambda: Client(PUBLIC_KEY, PRIVATE_KEY, revision="2024-13"))
    assert "revision: '2024-13'" in text


def test_cli_with_swapped_environment_never_prints_the_key() -> None:
    """`klaviyo-signal verify` with swapped variables exits 2 and prints no key."""
    env = {
        **os.environ,
        "KLAVIYO_PUBLIC_API_KEY": PRIVATE_KEY,
        "KLAVIYO_PRIVATE_API_KEY": PUBLIC_KEY,
    }
    env.pop("KLAVIYO_BASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "klaviyo_signal", "verify", "--email", "a@example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KLAVIYO_PUBLIC_API_KEY looks like a private key" in result.stderr
    assert SECRET not in result.stdout + result.stderr
