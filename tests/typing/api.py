"""Typed usage of the public API, checked by ``mypy --strict`` in CI (never run)."""

from __future__ import annotations

from klaviyo_signal import (
    DEFAULT_REVISION,
    Client,
    Delivery,
    DeliveryStatus,
    Message,
    RequestContext,
    current_context,
    request_context,
)
from klaviyo_signal.typing import JSON, Mapper, OnDelivery


def on_delivery(delivery: Delivery) -> None:
    if delivery.status is DeliveryStatus.FAILED:
        print(delivery.reason)


def mapper(message: Message) -> dict[str, JSON] | None:
    return {"sku": message.properties.get("sku")}


callback: OnDelivery = on_delivery
mapping: Mapper = mapper
client: Client = Client("AbC123", "pk_example_key", revision=DEFAULT_REVISION, on_delivery=callback)
queued: Delivery = client.track("Order Completed", {"revenue": 1}, user_id="u", backfill=False)
final: Delivery = queued.wait(1.0)
ok: bool = client.flush(timeout=2.0)
with request_context(user_id="u", anonymous_id="a", consent={"marketing": True}) as entered:
    inside: RequestContext | None = current_context()
    who: str | None = entered.user_id
    client.track("Order Completed", {"revenue": 1})
client.close()
