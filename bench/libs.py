"""One adapter per library: how to build it against the sink, send the event, flush, pause.

Every library sends the same ``Order Completed`` event: two line items, revenue as a number,
a currency and an email identity (``order(i)``). Queues are sized so nothing is dropped.
"""

from __future__ import annotations

import inspect
import json
import uuid
from datetime import datetime, timezone
from typing import Any

PUBLIC_KEY = "AbC123"
PRIVATE_KEY = "pk_bench_0123456789"
WRITE_KEY = "bench_write_key"
PROFILES = 5_000  # distinct customers the orders cycle through

#: libraries measured, their sink mode, and whether they queue in the background
LIBS: dict[str, dict[str, Any]] = {
    "klaviyo-signal": {"sink": "klaviyo", "label": "klaviyo-signal", "peer": False},
    "klaviyo-signal (no limits)": {
        "sink": "klaviyo",
        "label": "klaviyo-signal rate_limits=None",
        "peer": False,
    },
    "klaviyo-signal sync": {"sink": "klaviyo", "label": "klaviyo-signal sync", "peer": False},
    "segment": {"sink": "segment", "label": "Segment", "peer": True},
    "posthog": {"sink": "posthog", "label": "PostHog", "peer": True},
    "rudder": {"sink": "rudder", "label": "Rudder", "peer": True},
    "klaviyo-api": {"sink": "klaviyo", "label": "klaviyo-api create_event", "peer": True},
    "klaviyo-api bulk": {"sink": "klaviyo", "label": "klaviyo-api bulk", "peer": True},
    "requests": {"sink": "klaviyo", "label": "bare requests.Session", "peer": True},
}


def order(i: int) -> tuple[str, str, dict[str, Any]]:
    """Return (user_id, email, properties) of the i-th order."""
    customer = i % PROFILES
    properties = {
        "order_id": f"ORD-{100000 + i}",
        "revenue": 134.97,
        "currency": "USD",
        "shipping": 5.0,
        "tax": 10.8,
        "coupon": "SPRING10",
        "products": [
            {
                "product_id": "SKU-1001",
                "sku": "TRAIL-42-BLU",
                "name": "Trail Runner Shoe",
                "category": "Shoes",
                "price": 109.98,
                "quantity": 1,
                "url": "https://shop.example.com/p/trail-runner",
            },
            {
                "product_id": "SKU-2040",
                "sku": "SOCK-M-3PK",
                "name": "Merino Socks (3 pack)",
                "category": "Accessories",
                "price": 12.495,
                "quantity": 2,
                "url": "https://shop.example.com/p/merino-socks",
            },
        ],
    }
    return f"user-{customer}", f"customer{customer}@example.com", properties


def klaviyo_event_attributes(i: int) -> dict[str, Any]:
    """The event as a user of Klaviyo's own SDK (or of bare requests) would write it."""
    user_id, email, properties = order(i)
    return {
        "properties": properties,
        "time": datetime.now(timezone.utc).isoformat(),
        "value": properties["revenue"],
        "value_currency": properties["currency"],
        "unique_id": str(uuid.uuid4()),
        "metric": {"data": {"type": "metric", "attributes": {"name": "Order Completed"}}},
        "profile": {
            "data": {"type": "profile", "attributes": {"email": email, "external_id": user_id}}
        },
    }


def klaviyo_event_body(i: int) -> dict[str, Any]:
    return {"data": {"type": "event", "attributes": klaviyo_event_attributes(i)}}


def klaviyo_bulk_body(first: int, count: int) -> dict[str, Any]:
    """A bulk create job: one item per event (profile + its one event), as the schema wants."""
    items = []
    for i in range(first, first + count):
        attributes = klaviyo_event_attributes(i)
        profile = attributes.pop("profile")
        items.append(
            {
                "type": "event-bulk-create",
                "attributes": {
                    "profile": profile,
                    "events": {"data": [{"type": "event", "attributes": attributes}]},
                },
            }
        )
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": items}},
        }
    }


# -- klaviyo-signal ---------------------------------------------------------------------


def signal_kwargs() -> set[str]:
    """The keyword arguments this checkout's ``klaviyo_signal.Client`` accepts."""
    from klaviyo_signal import Client

    return set(inspect.signature(Client).parameters)


def make_signal(
    url: str,
    *,
    queue: int,
    limits: bool,
    pause: bool = False,
    sync: bool = False,
    timeout: float = 60.0,
) -> Any:
    """Build klaviyo-signal with the kwargs it has: new batching ones only when accepted."""
    from klaviyo_signal import Client

    accepted = signal_kwargs()
    wanted: dict[str, Any] = {
        "max_queue_size": queue,
        "timeout": timeout,
        "shutdown_timeout": 1.0,
        "max_retries": 5,
    }
    if pause:
        # Paused = pointed at a sink that never answers; a long interval keeps partial jobs
        # from being cut, and the byte budget is raised so the whole queue fits.
        wanted["flush_interval"] = 3600.0
        wanted["max_queue_bytes"] = 4 << 30
    else:
        wanted["max_queue_bytes"] = 4 << 30
    if not limits:
        wanted["rate_limits"] = None
    options = {k: v for k, v in wanted.items() if k in accepted}
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url, sync_mode=sync, **options)


def signal_track(client: Any, i: int) -> None:
    user_id, email, properties = order(i)
    client.track("Order Completed", properties, traits={"email": email}, user_id=user_id)


def signal_stats(client: Any) -> Any:
    stats = getattr(client, "stats", None)
    if stats is None:
        return None
    if callable(stats):
        stats = stats()

    def attrs_dict(s: Any) -> Any:
        import attrs

        return attrs.asdict(s)

    for conv in (attrs_dict, dict, lambda s: s._asdict(), vars):
        try:
            return json.loads(json.dumps(conv(stats), default=str))
        except Exception:
            continue
    return str(stats)


# -- peers ------------------------------------------------------------------------------


def make_segment(url: str, *, queue: int, timeout: float = 60.0) -> Any:
    from segment.analytics import Client

    return Client(WRITE_KEY, host=url, max_queue_size=queue, timeout=timeout)


def make_rudder(url: str, *, queue: int, timeout: float = 60.0) -> Any:
    from rudderstack.analytics import Client  # type: ignore[attr-defined]

    return Client(WRITE_KEY, host=url, max_queue_size=queue, timeout=timeout)


def make_posthog(url: str, *, queue: int, timeout: float = 60.0) -> Any:
    from posthog import Posthog

    return Posthog(WRITE_KEY, host=url, max_queue_size=queue, timeout=timeout, disable_geoip=True)


def segment_track(client: Any, i: int) -> None:
    # Segment and Rudder share the same call shape
    user_id, email, properties = order(i)
    client.track(user_id, "Order Completed", properties, context={"traits": {"email": email}})


def posthog_track(client: Any, i: int) -> None:
    user_id, email, properties = order(i)
    client.capture(
        "Order Completed", distinct_id=user_id, properties={**properties, "$set": {"email": email}}
    )


def make_klaviyo_api(url: str) -> Any:
    """Klaviyo's SDK: its Events API object built once (each ``.Events`` access builds one)."""
    from klaviyo_api import KlaviyoAPI

    return KlaviyoAPI(PRIVATE_KEY, max_delay=60, max_retries=10, test_host=url).Events


def klaviyo_api_event(events: Any, i: int) -> None:
    events.create_event(klaviyo_event_body(i))


def klaviyo_api_bulk(events: Any, first: int, count: int) -> None:
    events.bulk_create_events(klaviyo_bulk_body(first, count))


def make_requests(url: str) -> Any:
    import requests

    session = requests.Session()
    session.headers.update(
        {
            "Authorization": f"Klaviyo-API-Key {PRIVATE_KEY}",
            "revision": "2024-10-15",
            "Accept": "application/vnd.api+json",
            "Content-Type": "application/vnd.api+json",
        }
    )
    session.bench_url = url.rstrip("/") + "/api/events"  # type: ignore[attr-defined]
    return session


def requests_event(session: Any, i: int) -> None:
    response = session.post(session.bench_url, data=json.dumps(klaviyo_event_body(i)), timeout=30)
    response.raise_for_status()
