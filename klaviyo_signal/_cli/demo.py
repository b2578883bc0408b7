"""``klaviyo-signal demo``: a visit sent through the SDK to a local Klaviyo, every outcome shown.

The visit runs through a real sync-mode Client over HTTP to FakeKlaviyo, so what the table
shows (metrics, statuses, the retried 429) is what the SDK does against Klaviyo.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TextIO

from .._client import Client
from .._delivery.delivery import Delivery, DeliveryStatus
from .._errors import KlaviyoSignalError

if TYPE_CHECKING:
    from ..testing import FakeEvent, FakeKlaviyo, FakeProfile

__all__ = ["run_demo"]

_WIDTH = 80
_ROW = "{:<8}  {:<24}  {:<15}  {:<9}  {}"
_INDENT = " " * 10
_EMAIL = "jane@example.com"
_MISSING_EXTRA = (
    "klaviyo-signal demo runs a local fake of Klaviyo, which needs the testing extra:\n"
    "    pip install 'klaviyo-signal[testing]'\n"
)

# One step of the visit: its label in the table, and the call that sends it.
Step = tuple[str, Callable[[Client], Delivery]]


def _visit(anonymous_id: str) -> list[Step]:
    """The calls of one realistic visit: browse anonymously, sign in, buy."""
    anon = {"anonymous_id": anonymous_id}
    user = {"user_id": "user-42", "anonymous_id": anonymous_id}
    return [
        ('page "Home"', lambda c: c.page("Home", {"url": "https://shop.example/"}, **anon)),
        (
            'page "Running Shoes"',
            lambda c: c.page("Running Shoes", {"url": "https://shop.example/shoes"}, **anon),
        ),
        (
            "identify user-42",
            lambda c: c.identify(
                traits={
                    "email": _EMAIL,
                    "phone": "+44 7911 123456",
                    "firstName": "Jane",
                    "lastName": "Doe",
                    "plan": "gold",
                },
                **user,
            ),
        ),
        (
            'track "Product Viewed"',
            lambda c: c.track(
                "Product Viewed",
                {"product_id": "sku-123", "name": "Trail Runner", "price": Decimal("84.00")},
                **user,
            ),
        ),
        (
            'track "Order Completed"',
            lambda c: c.track(
                "Order Completed",
                {"order_id": "o-1001", "revenue": Decimal("84.00"), "currency": "GBP"},
                **user,
            ),
        ),
        ('track "Wishlist Shared"', lambda c: c.track("Wishlist Shared", {}, **user)),
        (
            'track "Product Viewed"',
            lambda c: c.track(
                "Product Viewed", {"product_id": "sku-9"}, consent={"marketing": False}, **user
            ),
        ),
    ]


# The step that meets a 429 first: an order, because retrying it is safe (unique_id).
_THROTTLED_STEP = 4


def run_demo(out: TextIO, err: TextIO) -> int:
    """Run the demo, writing to ``out``; return the exit code."""
    try:
        from ..testing import FakeKlaviyo  # noqa: PLC0415 - needs the testing extra

        fake = FakeKlaviyo()
    except ImportError as exc:
        err.write(_MISSING_EXTRA + f"({exc})\n")
        return 2
    with fake:
        client = Client("AbC123", "pk_demo_0123456789abcdef", base_url=fake.url, sync_mode=True)
        with client:
            out.write(f"A local Klaviyo is listening on {fake.url}; sending a visit to it.\n")
            out.write(f"API revision {client.revision}.\n\n")
            out.write("Live events\n")
            out.write(_ROW.format("TIME", "CALL", "KLAVIYO METRIC", "STATUS", "HTTP") + "\n")
            failed = 0
            for index, (label, call) in enumerate(_visit(f"anon-{uuid.uuid4().hex[:8]}")):
                if index == _THROTTLED_STEP:
                    fake.fail_next(429, retry_after=1)
                failed += _step(out, fake, client, label, call)
        _show_profile(out, fake)
    return 1 if failed else 0


def _step(
    out: TextIO, fake: FakeKlaviyo, client: Client, label: str, call: Callable[[Client], Delivery]
) -> int:
    """Send one call and print its row; return 1 if it failed."""
    seen = len(fake.requests)
    reason: str | None
    try:
        delivery = call(client)
    except KlaviyoSignalError as exc:
        status, http, reason = DeliveryStatus.FAILED, getattr(exc, "status", None), str(exc)
    else:
        status, http, reason = delivery.status, delivery.http_status, delivery.reason
    requests = fake.requests[seen:]
    metric = "-"
    answered = [r for r in requests if r.status is not None and r.status < 400]
    if answered and answered[-1].path.rstrip("/") == "/api/profile-import":
        metric = "(profile)"
        linked = any(r.path.startswith("/client/profiles") for r in answered)
        if linked:
            reason = (
                "linked the anonymous id through /client/profiles (public key only), then "
                "updated that profile with profile-import: the visit is merged"
            )
        elif answered[-1].status == 200:
            reason = "updated the profile the anonymous page views created (merged)"
    elif answered:
        metric = answered[-1].body["data"]["attributes"]["metric"]["data"]["attributes"]["name"]
    statuses = [r.status for r in requests]
    if 429 in statuses and status is DeliveryStatus.DELIVERED:
        trail = " -> ".join(str(s) for s in statuses)
        reason = f"retried after 429: HTTP {trail}, waiting as Retry-After asked"
    now = datetime.now().strftime("%H:%M:%S")
    out.write(_ROW.format(now, label, metric, str(status), http or "-") + "\n")
    if reason:
        out.write(_wrap(reason) + "\n")
    out.flush()
    return 1 if status is DeliveryStatus.FAILED else 0


def _wrap(text: str, indent: str = _INDENT) -> str:
    return textwrap.fill(text, _WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _show_profile(out: TextIO, fake: FakeKlaviyo) -> None:
    profile = fake.profile_for(email=_EMAIL)
    if profile is None:
        out.write(f"\nNo Klaviyo profile holds {_EMAIL}.\n")
        return
    count = len(fake.profiles)
    merged = "the anonymous visit merged into it" if count == 1 else f"{count} profiles in all"
    out.write(f"\nKlaviyo profile {profile.id} ({merged})\n")
    for name, value in _profile_rows(profile):
        out.write(f"  {name:<15}{value}\n")
    events = fake.events_for(email=_EMAIL)
    out.write(f"\nActivity feed ({len(events)} events, oldest first)\n")
    out.write(f"  {'TIME':<8}  {'METRIC':<15}  {'VALUE':<10}  DETAILS\n")
    for event in events:
        out.write(_feed_row(event) + "\n")


def _profile_rows(profile: FakeProfile) -> list[tuple[str, str]]:
    rows = [
        ("email", profile.email),
        ("phone_number", profile.phone_number),
        ("external_id", profile.external_id),
        ("anonymous_ids", ", ".join(profile.anonymous_ids)),
        *((k, str(v)) for k, v in profile.attributes.items()),
        *((k, str(v)) for k, v in profile.properties.items()),
    ]
    return [(name, value) for name, value in rows if value]


def _feed_row(event: FakeEvent) -> str:
    when = "-"
    if event.time:
        sent = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
        when = sent.astimezone().strftime("%H:%M:%S")
    value = ""
    if event.value is not None:
        value = f"{event.value:.2f} {event.value_currency or ''}".strip()
    details = ", ".join(
        f"{k}={v}" for k, v in event.properties.items() if k != "consent" and v is not None
    )
    row = f"  {when:<8}  {event.metric:<15}  {value:<10}  {details}"
    return row if len(row) <= _WIDTH else row[: _WIDTH - 3] + "..."
