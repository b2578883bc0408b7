"""asyncio: awaiting deliveries, flushes and sends never stalls the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from klaviyo_signal import APIError, Client, Delivery, DeliveryStatus, ValidationError
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

T = TypeVar("T")
ORDER = {"order_id": "o-1", "revenue": 9.5, "currency": "USD"}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def ticks_during(awaitable: Awaitable[T]) -> tuple[T, int, float]:
    """Await ``awaitable`` while another task ticks every 10 ms; return its result, the
    ticks counted meanwhile and the seconds it took."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running before the wait starts
    started = time.monotonic()
    try:
        result = await awaitable
    finally:
        task.cancel()
    return result, ticks, time.monotonic() - started


def test_a_slow_klaviyo_does_not_stall_the_loop_while_aflush_await_and_atrack_wait() -> None:
    """With Klaviyo answering in 0.4 s, another task keeps ticking while aflush, await
    delivery and atrack wait, and each returns the final outcome."""
    with FakeKlaviyo(latency=0.4) as fake:

        async def main() -> None:
            async with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
                queued = client.track("Order Completed", ORDER, user_id="u-await")
                final, ticks, took = await ticks_during(queued)
                assert final.status is DeliveryStatus.DELIVERED
                assert took >= 0.3  # Klaviyo was slow to answer
                assert ticks >= 3, (took, ticks)  # and the other task ran meanwhile

                sent, ticks, took = await ticks_during(
                    client.atrack("Order Completed", ORDER, user_id="u-atrack")
                )
                assert sent.status is DeliveryStatus.DELIVERED
                assert sent.http_status == 202
                assert took >= 0.3  # Klaviyo was slow to answer
                assert ticks >= 3, (took, ticks)  # and the other task ran meanwhile

                client.track("Order Completed", ORDER, user_id="u-aflush")
                flushed, ticks, took = await ticks_during(client.aflush(timeout=30))
                assert flushed is True
                assert took >= 0.3  # Klaviyo was slow to answer
                assert ticks >= 3, (took, ticks)  # and the other task ran meanwhile

        run(main())
        assert {e.profile.external_id for e in fake.events} == {"u-await", "u-atrack", "u-aflush"}


def test_async_with_sends_the_queue_when_the_block_ends() -> None:
    """Leaving ``async with Client(...)`` sends what was queued, without the loop waiting."""
    with FakeKlaviyo(latency=0.2) as fake:

        async def main() -> int:
            async with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
                for n in range(5):
                    client.track("Order Completed", ORDER, user_id=f"u-{n}")
                _, ticks, _ = await ticks_during(client.aclose())
                await client.aclose()  # idempotent
            return ticks

        ticks = run(main())
        assert len(fake.events) == 5
        assert ticks >= 2


def test_atrack_sends_at_once_instead_of_after_flush_interval() -> None:
    """atrack seals its bulk job at once: it does not wait out a long flush_interval."""
    with FakeKlaviyo() as fake:

        async def main() -> Delivery:
            async with Client(
                PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60
            ) as client:
                return await asyncio.wait_for(
                    client.atrack("Order Completed", ORDER, user_id="u-now"), timeout=20
                )

        assert run(main()).status is DeliveryStatus.DELIVERED
        assert len(fake.events) == 1


def test_aidentify_and_apage_return_their_final_delivery() -> None:
    """aidentify and apage return delivered Deliveries, and Klaviyo has the profile and view."""
    with FakeKlaviyo() as fake:

        async def main() -> tuple[Delivery, Delivery]:
            async with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
                who = await client.aidentify("u-9", {"email": "nine@example.com"})
                seen = await client.apage("Pricing", {"url": "https://x.test/p"}, user_id="u-9")
                return who, seen

        who, seen = run(main())
        assert who.status is DeliveryStatus.DELIVERED
        assert seen.status is DeliveryStatus.DELIVERED
        assert fake.profile_for(email="nine@example.com") is not None
        assert [e.metric for e in fake.events_for(external_id="u-9")] == ["page_view"]


def test_sync_mode_deliveries_await_at_once_and_atrack_raises_typed_errors() -> None:
    """In sync mode ``await delivery`` resolves at once, and atrack raises as track does
    (from a thread, with the loop still running)."""
    with FakeKlaviyo(latency=0.3) as fake:
        client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, max_retries=0)

        async def main() -> None:
            delivered = await ticks_during(client.atrack("Order Completed", ORDER, user_id="u"))
            assert delivered[0].status is DeliveryStatus.DELIVERED
            assert delivered[1] >= 3
            assert await delivered[0] is delivered[0]
            fake.fail_next(400)
            with pytest.raises(APIError):
                await client.atrack("Order Completed", ORDER, user_id="u")

        run(main())
        client.close()


def test_a_bad_call_raises_validation_error_from_the_await() -> None:
    """atrack with no identifier raises ValidationError, and nothing is queued."""

    async def main(client: Client) -> None:
        with pytest.raises(ValidationError, match="identif"):
            await client.atrack("Order Completed", ORDER)

    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9") as client:
        run(main(client))
        assert client.stats.queued == 0


def test_a_cancelled_await_leaves_the_call_queued_and_it_is_still_sent() -> None:
    """A wait_for that times out on a Delivery leaves the call queued; it is sent later."""
    with FakeKlaviyo(latency=0.3) as fake:

        async def main(client: Client) -> Delivery:
            queued = client.track("Order Completed", ORDER, user_id="u-late")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(queued, timeout=0.01)
            assert await client.aflush(timeout=30)
            return await queued  # final by now: at once

        with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
            assert run(main(client)).status is DeliveryStatus.DELIVERED
        assert len(fake.events) == 1


def test_two_tasks_awaiting_one_delivery_both_get_the_outcome() -> None:
    """Two coroutines awaiting the same queued Delivery both resolve to its final outcome."""
    with FakeKlaviyo() as fake:

        async def main() -> list[Delivery]:
            async with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
                queued = client.track("Order Completed", ORDER, user_id="u-two")

                async def wait() -> Delivery:
                    return await queued

                return await asyncio.wait_for(asyncio.gather(wait(), wait()), timeout=30)

        assert [d.status for d in run(main())] == [DeliveryStatus.DELIVERED] * 2


def test_on_delivery_never_runs_on_the_event_loop() -> None:
    """on_delivery runs off the loop's thread for queued, dropped and sync-mode calls."""
    with FakeKlaviyo() as fake:
        seen: list[tuple[str, bool]] = []
        done = threading.Event()

        def on_delivery(delivery: Delivery) -> None:
            seen.append((str(delivery.status), threading.get_ident() == loop_thread))
            if len(seen) == 4:
                done.set()

        async def main() -> None:
            async with Client(
                PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, on_delivery=on_delivery
            ) as client:
                await client.atrack("Order Completed", ORDER, user_id="u")
                denied = {"marketing": False}
                client.track("Order Completed", ORDER, user_id="u", consent=denied)
                await client.atrack("Order Completed", ORDER, user_id="u", consent=denied)
            sync = Client(
                PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, on_delivery=on_delivery
            )
            await sync.atrack("Order Completed", ORDER, user_id="u")
            sync.close()
            await asyncio.get_running_loop().run_in_executor(None, done.wait, 30)

        loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
        run(main())
        assert sorted(status for status, _ in seen) == [
            "delivered",
            "delivered",
            "dropped",
            "dropped",
        ]
        assert not any(on_loop for _, on_loop in seen)


def test_await_on_an_async_flush_after_handler_flushes_before_returning() -> None:
    """An async handler decorated with flush_after has sent its events when it returns."""
    with FakeKlaviyo() as fake:
        client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60)

        @client.flush_after(timeout=20)
        async def handler(user: str) -> str:
            client.track("Order Completed", ORDER, user_id=user)
            await asyncio.sleep(0)
            return f"ok {user}"

        async def main() -> str:
            answer: Callable[[str], Awaitable[str]] = handler
            return await answer("u-async")

        assert run(main()) == "ok u-async"
        assert len(fake.events) == 1
        client.close()


def test_aflushing_reports_what_did_not_make_it(caplog: pytest.LogCaptureFixture) -> None:
    """``async with client.aflushing(...)`` exposes the calls left unsent and logs once."""
    with FakeKlaviyo(latency=1.0) as fake:

        async def main(client: Client) -> tuple[bool | None, int]:
            async with client.aflushing(timeout=0.05) as report:
                for n in range(3):
                    client.track("Order Completed", ORDER, user_id=f"u-{n}")
            return report.flushed, report.left

        with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
            flushed, left = run(main(client))
        assert flushed is False
        assert left == 3
        warnings = [r for r in caplog.records if "flush budget" in r.getMessage()]
        assert len(warnings) == 1
        assert "3 call(s)" in warnings[0].getMessage()
