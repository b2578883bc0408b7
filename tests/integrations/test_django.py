"""The Django middleware, in a real Django project (a subprocess) behind Django's test clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from klaviyo_signal.testing import FakeKlaviyo

pytest.importorskip("django")

SITE = Path(__file__).with_name("django_site.py")
ROOT = Path(__file__).parents[2]


def run_site(
    fake: FakeKlaviyo, tmp_path: Path, *modes: str, settings: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the tiny Django project's requests in ``modes`` against the fake."""
    env = dict(
        os.environ,
        FAKE_URL=fake.url,
        DJANGO_DB=str(tmp_path / "db.sqlite3"),
        KLAVIYO_SIGNAL_SETTINGS=json.dumps(settings or {}),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.run(
        [sys.executable, str(SITE), *modes],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def answers(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Return the views' JSON answers, failing with the subprocess's stderr."""
    assert done.returncode == 0, done.stderr
    out: list[dict[str, Any]] = json.loads(done.stdout)
    return out


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_requests_send_with_the_visitors_identity_and_consent(
    fake: FakeKlaviyo, tmp_path: Path, mode: str
) -> None:
    """Under WSGI and ASGI, a view's bare track() carries the cookie ids, consent and user."""
    anonymous, logged_in, for_customer, stranger, nobody, after = answers(
        run_site(fake, tmp_path, mode)
    )
    events = {event.unique_id: event for event in fake.events}
    cookiebot = {"necessary": True, "preferences": False, "statistics": True, "marketing": True}

    first = events[anonymous["message_id"]]
    assert first.profile.anonymous_ids == ("anon-1",)
    assert first.properties["consent"] == cookiebot

    second = events[logged_in["message_id"]]
    assert (second.profile.external_id, second.profile.email) == ("1", "ada@example.com")
    assert second.profile.anonymous_ids == ("anon-1",)  # the visit before login is linked
    assert second.properties["consent"] == cookiebot

    # An explicit user_id naming someone else wins and takes nothing from the request.
    third = events[for_customer["message_id"]]
    assert (third.profile.external_id, third.profile.email) == ("customer-7", None)
    assert third.properties["consent"] == {}

    # Another visitor who denied marketing: dropped, and none of Ada's context is seen.
    assert stranger["status"] == "dropped"
    assert stranger["seen"]["anonymous_id"] == "anon-2"
    assert stranger["seen"]["user_id"] is None
    assert stranger["message_id"] not in events

    # A request with no cookies and no user sees no context at all.
    assert nobody["seen"] == {}
    assert "no profile identifier" in nobody["error"]
    assert after == {"after": {}}
    assert len(fake.events) == 3


@pytest.mark.parametrize(
    ("mode", "user_id"),
    [
        ("custom", "username"),
        # Under ASGI a callable runs through sync_to_async: its lazy request.user reads the
        # database, which Django refuses on the event loop.
        ("custom-asgi", "tests.integrations.django_helpers.username"),
    ],
)
def test_settings_name_other_sources(
    fake: FakeKlaviyo, tmp_path: Path, mode: str, user_id: str
) -> None:
    """KLAVIYO_SIGNAL picks the user id (attribute or callable), the cookies and the reader."""
    settings = {
        "USER_ID": user_id,
        "TRAITS": None,
        "ANONYMOUS_ID_COOKIE": "my_anon",
        "CONSENT_COOKIES": {"OptanonConsent": "klaviyo_signal.integrations.cookies.onetrust"},
    }
    (answer,) = answers(run_site(fake, tmp_path, mode, settings=settings))[:1]
    assert answer["status"] == "dropped"  # OneTrust's C0004 (targeting) is denied
    assert answer["seen"] == {
        "user_id": "ada",
        "anonymous_id": "anon-9",
        "traits": {},
        "consent": {"necessary": True, "analytics": True, "marketing": False},
    }


def test_a_misspelt_setting_fails_naming_the_keys(fake: FakeKlaviyo, tmp_path: Path) -> None:
    """An unknown KLAVIYO_SIGNAL key raises ConfigurationError listing the valid ones."""
    done = run_site(fake, tmp_path, "wsgi", settings={"USERID": "pk"})
    assert done.returncode != 0
    assert "ConfigurationError: settings.KLAVIYO_SIGNAL: unknown key(s) 'USERID'" in done.stderr
    assert "USER_ID, TRAITS" in done.stderr
