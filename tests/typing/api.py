"""Typed usage of the public API, checked by ``mypy --strict`` in CI (never run)."""

from __future__ import annotations

import asyncio

from klaviyo_signal import (
    DEFAULT_REVISION,
    Client,
    Delivery,
    DeliveryStatus,
    FlushReport,
    Message,
    RequestContext,
    RequestsTransport,
    current_context,
    request_context,
)
from klaviyo_signal.typing import (
    JSON,
    ClientOptions,
    HTTPRequest,
    HTTPResponse,
    Mapper,
    OnDelivery,
    Transport,
)


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


class LoggingTransport:
    """A transport that wraps the default one: the seam users plug into."""

    def __init__(self) -> None:
        self._inner = RequestsTransport(max_retries=0)

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        print(request.method, request.url)
        return self._inner.handle(request)

    def close(self) -> None:
        self._inner.close()


seam: Transport = LoggingTransport()
wrapped: Client = Client("AbC123", "pk_example_key", transport=seam)
wrapped.close()


@client.flush_after(timeout=2.0)
def handler(event: dict[str, str], context: object) -> dict[str, int]:
    client.track("Order Completed", {"revenue": 1}, user_id=event["user"])
    return {"statusCode": 200}


@client.flush_after
async def async_handler(user: str) -> int:
    await client.atrack("Order Completed", {"revenue": 1}, user_id=user)
    return 1


answer: dict[str, int] = handler({"user": "u"}, None)
with client.flushing(timeout=2.0) as report:
    client.page("Pricing", user_id="u")
left: int = report.left
flushed: bool | None = report.flushed
disabled: Client = Client("AbC123", "pk_example_key", disabled=True)


async def in_a_coroutine() -> None:
    async with Client("AbC123", "pk_example_key") as aclient:
        delivery: Delivery = await aclient.track("Order Completed", user_id="u")
        sent: Delivery = await aclient.aidentify("u", {"email": "a@example.com"})
        viewed: Delivery = await aclient.apage("Pricing", user_id="u")
        done: bool = await aclient.aflush(timeout=2.0)
        async with aclient.aflushing(timeout=1.0) as areport:
            aclient.track("Order Completed", user_id="u")
        again: FlushReport = areport
        count: int = await async_handler("u")
        print(delivery, sent, viewed, done, again, count)
    await aclient.aclose()


asyncio.run(in_a_coroutine())
durable: Client = Client("AbC123", "pk_example_key", outbox="klaviyo-outbox.db")


options: ClientOptions = {"sync_mode": True, "timeout": 5.0}
from_env: Client = Client.from_env(**options)
from_install: Client = Client.from_install({"config": {}}, flush_interval=0.5)
