"""The worker lets calling threads have the GIL: its work comes in short slices, and what it
queues gives the garbage collector nothing to visit.

No test here times anything: each checks the mechanism itself (where the worker ends a
slice, what a body is built in, what a queued call leaves for the collector).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable

from klaviyo_signal import Client
from klaviyo_signal._delivery.jobs import _BODY_STEP, BulkJob, OpenJob
from klaviyo_signal._delivery.worker import Worker
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, assert_valid


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def track(client: Client, i: int) -> None:
    client.track(
        "Order Completed",
        {"order_id": f"A-{i}", "revenue": 20.0, "currency": "USD"},
        traits={"email": f"c{i % 50}@example.com"},
        user_id=f"u-{i % 50}",
    )


def full_job(events: int) -> BulkJob:
    job = OpenJob()
    for i in range(events):
        data = b'{"type":"event","attributes":{"properties":{"n":%d}}}' % i
        assert job.add(data, (f"c{i}@example.com", None, None, None), i, 0.0)
    return job.seal()


def test_a_full_jobs_body_is_listed_in_steps_with_turns_between() -> None:
    """Building a 1,000-event body hands control back every _BODY_STEP items, same bytes."""
    job = full_job(1000)
    turns: list[int] = []
    body = job.body(lambda: turns.append(1))
    assert body == job.body()
    assert len(turns) == math.ceil(1000 / _BODY_STEP) - 1


def test_the_worker_reaches_a_turn_after_every_call_it_encodes(fake: FakeKlaviyo) -> None:
    """Each queued call the worker encodes is followed by a point where it may yield."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60.0)
    worker = client._worker
    turns = [0]
    real_turn = worker._turn

    def counting_turn() -> None:
        turns[0] += 1
        real_turn()

    worker._turn = counting_turn  # type: ignore[method-assign]
    try:
        for i in range(300):
            track(client, i)
        assert client.flush(30)
        assert turns[0] >= 300
        assert len(fake.events) == 300
        for request in fake.requests:
            assert_valid(request.path, request.body)
    finally:
        client.close()


def test_the_worker_yields_at_a_slices_end_only_while_someone_may_wait() -> None:
    """A due turn sleeps while callers are active, and not when nobody could want the GIL."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9")
    worker: Worker = client._worker
    try:
        worker._slice = 0.0  # the slice began long ago: a turn is due
        worker._active_until = math.inf
        worker._paused = 0.0
        worker._turn()
        assert worker._paused > 0.0  # it yielded
        assert worker._slice > 0.0  # and began a new slice

        worker._slice = 0.0
        worker._active_until = 0.0
        worker._paused = 0.0
        worker._turn()
        assert worker._paused == 0.0  # no caller, no request in flight: no pause
        assert worker._slice > 0.0
    finally:
        client.close()


def test_a_queued_call_leaves_nothing_for_the_garbage_collector(fake: FakeKlaviyo) -> None:
    """After a collection, a thousand more waiting calls add (almost) no tracked objects."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60.0)
    worker = client._worker
    try:

        def tracked_with(calls: int, first: int) -> int:
            for i in range(first, first + calls):
                track(client, i)
            # Queued or already in the open job (the worker takes them as it pleases):
            # either way nothing in them is a container the collector keeps visiting.
            gc.collect()
            return len(gc.get_objects())

        before = tracked_with(50, 0)
        after = tracked_with(900, 50)
        assert worker.pending == 950  # all still waiting: nothing was sent
        assert after - before < 50
    finally:
        client.close()
    assert len(fake.events) == 950
