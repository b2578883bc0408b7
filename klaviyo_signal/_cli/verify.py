"""``klaviyo-signal verify``: the integration guide's "Verify it's working" step.

Sends one identify and one test event with the keys from the environment, in sync mode, so
each HTTP status is known before the command ends.
"""

from __future__ import annotations

from typing import TextIO

from .._blueprint.blueprint import default_blueprint
from .._errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    TransportError,
    ValidationError,
)
from .client import client_from_env, revision_line

__all__ = ["TEST_EVENT", "run_verify"]

TEST_EVENT = "Klaviyo Signal Test"
_KEY_FIX = (
    "Fix: check the private key (KLAVIYO_PRIVATE_API_KEY) in Klaviyo under\n"
    "Account > Settings > API Keys; it must be a private key (pk_...) with the\n"
    "events:write and profiles:write scopes.\n"
)


def run_verify(email: str, out: TextIO, err: TextIO, revision: str | None = None) -> int:
    """Send the test identify and event for ``email``; return the exit code."""
    blueprint = default_blueprint().enable(TEST_EVENT)
    options = {} if revision is None else {"revision": revision}
    try:
        client = client_from_env("verify", err, sync_mode=True, blueprint=blueprint, **options)
    except ConfigurationError as exc:
        err.write(
            f"klaviyo-signal verify: {exc}\n"
            "Set KLAVIYO_PUBLIC_API_KEY (the 6-character Site ID) and\n"
            "KLAVIYO_PRIVATE_API_KEY (pk_...), both from Account > Settings > API Keys.\n"
        )
        return 2
    metric = blueprint.rules[TEST_EVENT].metric
    out.write(revision_line(client.revision))
    with client:
        try:
            profile = client.identify(traits={"email": email})
            out.write(f"profile import: HTTP {profile.http_status} (200 or 201 expected)\n")
            event = client.track(
                TEST_EVENT, {"source": "klaviyo-signal verify"}, traits={"email": email}
            )
            out.write(f"event {metric!r}: HTTP {event.http_status} (202 expected)\n")
        except ValidationError as exc:
            err.write(f"klaviyo-signal verify: --email: {exc}\n")
            return 2
        except (AuthenticationError, PermissionDeniedError) as exc:
            err.write(f"Klaviyo refused the key: HTTP {exc.status}.\n{_KEY_FIX}")
            return 1
        except (APIError, TransportError) as exc:
            err.write(f"klaviyo-signal verify: not delivered: {exc}\n")
            return 1
    out.write(
        "\nBoth reached Klaviyo. To see them: Audience > Profiles, search for\n"
        f"{email}, open the profile and look at its activity feed for the\n"
        f"{metric!r} event (it can take a minute to appear).\n"
    )
    return 0
