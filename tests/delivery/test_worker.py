"""Background delivery's guarantees: outcomes, failures, bounded queue, shutdown, threads, fork."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import attrs
import pytest

from klaviyo_signal import (
    Client,
    ConfigurationError,
    Delivery,
    DeliveryStatus,
    Stats,
    default_blueprint,
)
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, assert_valid

BULK = "/api/event-bulk-create-jobs"
BLUEPRINT = default_blueprint().enable("Signed Up")
WORKER = "klaviyo-signal-worker"
SENDER = "klaviyo-signal-sender"  # waits for the answer to the request in flight


def client_for(fake: FakeKlaviyo, **options: object) -> Client:
    options.setdefault("flush_interval", 60.0)
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT, **options)  # type: ignore[arg-type]


def workers(*names: str) -> list[threading.Thread]:
    names = names or (WORKER,)
    return [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def no_more_threads_than(before: int) -> bool:
    """Wait up to 5 s for the worker and sender threads to be back to ``before``."""
    deadline = time.monotonic() + 5
    while len(workers(WORKER, SENDER)) > before and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(workers(WORKER, SENDER)) <= before


def test_429_storm_loses_nothing(fake: FakeKlaviyo) -> None:
    """Five 429s in a row pause the endpoint, then every event is delivered exactly once."""
    fake.fail_next(429, times=5, retry_after=0.05)
    client = client_for(fake)
    calls = [client.track("Signed Up", {"n": i}, user_id=f"user-{i % 5}") for i in range(50)]
    assert client.flush(timeout=60)
    client.close()
    assert {c.wait(timeout=10).status for c in calls} == {DeliveryStatus.DELIVERED}
    assert len(fake.events) == 50
    assert [r.status for r in fake.requests] == [429] * 5 + [202]
    for request in fake.requests:
        assert_valid(BULK, request.body)
    stats = client.stats
    assert stats.rate_limited == 5
    assert stats.retries >= 5
    assert stats.delivered == 50


def test_429_without_retry_after_backs_off(fake: FakeKlaviyo) -> None:
    """A 429 with no Retry-After still pauses (fallback backoff) and then delivers."""
    fake.fail_next(429)
    client = client_for(fake)
    delivery = client.track("Signed Up", user_id="user-1")
    started = time.monotonic()
    assert client.flush(timeout=30)
    assert time.monotonic() - started >= 0.4  # the first backoff is 0.5-1 s
    assert delivery.wait(timeout=5).status is DeliveryStatus.DELIVERED
    client.close()


def test_server_errors_are_retried(fake: FakeKlaviyo) -> None:
    """A 503 is retried by the transport and the event is delivered once."""
    fake.fail_next(503)
    client = client_for(fake)
    delivery = client.track("Signed Up", user_id="user-1")
    client.close()
    assert delivery.wait(timeout=5).status is DeliveryStatus.DELIVERED
    assert len(fake.events) == 1
    assert client.stats.retries >= 1


def test_401_fails_batches_and_is_logged_once(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """Two rejected jobs fail every call with the actionable message, logged a single time."""
    fake.fail_next(401, times=2)
    client = client_for(fake)
    with caplog.at_level(logging.WARNING, logger="klaviyo_signal"):
        first = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
        assert client.flush(timeout=30)
        second = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
        assert client.flush(timeout=30)
    finals = [c.wait(timeout=5) for c in first + second]
    assert {f.status for f in finals} == {DeliveryStatus.FAILED}
    assert all("API Keys" in (f.reason or "") for f in finals)
    records = [r for r in caplog.records if "401" in r.getMessage()]
    assert len(records) == 1
    assert PRIVATE_KEY not in caplog.text
    assert client.stats.failed_by_reason == {"HTTP 401": 6}
    client.close()


def test_full_queue_drops_at_once(fake: FakeKlaviyo) -> None:
    """Past max_queue_size new calls are dropped with reason 'queue full', without blocking."""
    client = client_for(fake, max_queue_size=5)
    calls = [client.track("Signed Up", {"n": i}, user_id="user-1") for i in range(8)]
    assert [c.status for c in calls] == [DeliveryStatus.QUEUED] * 5 + [DeliveryStatus.DROPPED] * 3
    assert {c.reason for c in calls[5:]} == {"queue full"}
    client.close()
    assert len(fake.events) == 5
    stats = client.stats
    assert (stats.delivered, stats.dropped) == (5, 3)
    assert stats.dropped_by_reason == {"queue full": 3}


def test_byte_budget_bounds_the_queue(fake: FakeKlaviyo) -> None:
    """max_queue_bytes refuses calls once the queued ones hold the budget."""
    client = client_for(fake, max_queue_bytes=20_000)
    calls = [client.track("Signed Up", {"n": i}, user_id="user-1") for i in range(50)]
    dropped = [c for c in calls if c.status is DeliveryStatus.DROPPED]
    assert 0 < len(dropped) < 50
    assert client.stats.queue_bytes <= 20_000
    client.close()


def test_block_on_full_waits_for_room(fake: FakeKlaviyo) -> None:
    """With block_on_full a call waits for room, so nothing is dropped."""
    client = client_for(fake, max_queue_size=3, flush_interval=0.01, block_on_full=True)
    calls = [client.track("Signed Up", {"n": i}, user_id="user-1") for i in range(20)]
    client.close()
    assert {c.wait(timeout=10).status for c in calls} == {DeliveryStatus.DELIVERED}
    assert len(fake.events) == 20


def test_flush_times_out_without_hanging() -> None:
    """flush(timeout) returns False when Klaviyo is slow, then True once it answered."""
    with FakeKlaviyo(latency=1.5) as fake:
        client = client_for(fake)
        client.track("Signed Up", user_id="user-1")
        started = time.monotonic()
        assert client.flush(timeout=0.2) is False
        assert time.monotonic() - started < 1.4
        assert client.flush(timeout=30) is True
        client.close()


def test_no_thread_before_first_call_none_after_close(fake: FakeKlaviyo) -> None:
    """The worker starts with the first call and is gone after close(); close() twice is fine."""
    before = len(workers())
    client = client_for(fake)
    assert len(workers()) == before
    senders = len(workers(SENDER))
    client.track("Signed Up", user_id="user-1")
    assert len(workers()) == before + 1
    assert client.flush(10)
    assert len(workers(SENDER)) == senders + 1
    client.close()
    client.close()
    assert len(workers()) == before
    assert len(workers(SENDER)) == senders
    late = client.track("Signed Up", user_id="user-1")
    assert (late.status, late.reason) == (DeliveryStatus.DROPPED, "client is closed")
    assert len(fake.events) == 1


def test_close_counts_and_logs_what_it_could_not_send(caplog: pytest.LogCaptureFixture) -> None:
    """Calls in flight at shutdown_timeout end failed (reason: shutdown), counted and logged."""
    with FakeKlaviyo(latency=2.0) as fake:
        seen: list[Delivery] = []
        client = client_for(fake, shutdown_timeout=0.3, on_delivery=seen.append)
        calls = [client.track("Signed Up", user_id=f"user-{i}") for i in range(4)]
        with caplog.at_level(logging.WARNING, logger="klaviyo_signal"):
            client.close()
        finals = [c.wait(timeout=0) for c in calls]
        # Their request was sent but not answered: Klaviyo may have them, so not "dropped".
        assert {f.status for f in finals} == {DeliveryStatus.FAILED}
        assert all((f.reason or "").startswith("shutdown") for f in finals)
        assert "4 call(s) were not delivered" in caplog.text
        assert client.stats.failed_by_reason == {"shutdown": 4}
        assert len(seen) == 4
        time.sleep(2.5)  # the request in flight ends; its calls stay final once
        assert len(seen) == 4


def test_twenty_threads_account_for_every_call_once(fake: FakeKlaviyo) -> None:
    """20 threads calling one client at once: each call ends exactly once, none lost."""
    seen: list[str] = []
    lock = threading.Lock()

    def record(delivery: Delivery) -> None:
        with lock:
            seen.append(delivery.message_id)

    client = client_for(fake, flush_interval=0.05, on_delivery=record)
    ids: list[str] = []
    barrier = threading.Barrier(20)

    def run(n: int) -> None:
        barrier.wait()
        for i in range(150):
            delivery = client.track("Signed Up", {"i": i}, user_id=f"user-{n}")
            with lock:
                ids.append(delivery.message_id)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=60)
    client.close()
    assert len(ids) == len(set(ids)) == 3000
    assert Counter(seen) == Counter(ids)
    assert sorted(e.unique_id or "" for e in fake.events) == sorted(ids)
    stats = client.stats
    assert (stats.delivered, stats.dropped, stats.failed, stats.queued) == (3000, 0, 0, 0)


def test_stats_is_a_frozen_snapshot(fake: FakeKlaviyo) -> None:
    """client.stats is a frozen Stats that does not change under the reader."""
    client = client_for(fake)
    snapshot = client.stats
    client.track("Signed Up", user_id="user-1")
    assert isinstance(snapshot, Stats)
    assert snapshot.queued == 0
    assert client.stats.queued == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snapshot.queued = 5  # type: ignore[misc]
    client.close()
    assert client.stats.requests == 1
    assert client.stats.bytes_sent > 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("flush_interval", 0),
        ("max_queue_size", 0),
        ("max_queue_bytes", -1),
        ("block_on_full", "yes"),
        ("shutdown_timeout", -1),
        ("rate_limits", {"POST /api/events": (0, 10)}),
        ("rate_limits", {"events": (10, 10)}),
        ("rate_limits", "fast"),
    ],
)
def test_bad_delivery_options_fail_at_build(option: str, value: object) -> None:
    """Wrong delivery options raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=option):
        Client(PUBLIC_KEY, PRIVATE_KEY, **{option: value})  # type: ignore[arg-type]


def _run(script: str, fake: FakeKlaviyo, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKE_URL": fake.url}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_PRELUDE = f"""
import os
from klaviyo_signal import Client, default_blueprint
client = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url=os.environ["FAKE_URL"],
                blueprint=default_blueprint().enable("Signed Up"), flush_interval=60.0,
                shutdown_timeout=float(os.environ.get("SHUTDOWN", "10")))
"""


def test_exit_with_a_pending_queue_sends_it(fake: FakeKlaviyo) -> None:
    """A process that tracks and exits without close() still delivers, via the exit hook."""
    done = _run(
        _PRELUDE + "for i in range(50): client.track('Signed Up', {'n': i}, user_id='u-1')\n",
        fake,
    )
    assert done.returncode == 0, done.stderr
    assert len(fake.events) == 50


def test_exit_that_cannot_send_logs_the_count() -> None:
    """When Klaviyo is too slow for shutdown_timeout, exit logs how many calls were lost."""
    with FakeKlaviyo(latency=3.0) as fake:
        script = "for i in range(7): client.track('Signed Up', user_id='u-1')\n"
        env_script = "import os\nos.environ['SHUTDOWN'] = '0.3'\n" + _PRELUDE + script
        started = time.monotonic()
        done = _run(env_script, fake)
        assert done.returncode == 0, done.stderr
        assert "7 call(s) were not delivered" in done.stderr
        assert time.monotonic() - started < 30


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_sends_its_own_calls_only(fake: FakeKlaviyo) -> None:
    """After fork the child delivers its calls; the parent's queued call is sent once."""
    script = (
        _PRELUDE
        + """
import warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() with a thread running
client.track("Signed Up", {"who": "parent-before"}, user_id="p")
pid = os.fork()
if pid == 0:
    d = client.track("Signed Up", {"who": "child"}, user_id="c")
    ok = client.flush(timeout=20)
    client.close()
    os._exit(0 if ok and d.wait(5).status.value == "delivered" else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
client.track("Signed Up", {"who": "parent-after"}, user_id="p")
assert client.flush(timeout=20)
client.close()
"""
    )
    done = _run(script, fake)
    assert done.returncode == 0, done.stderr
    assert sorted(e.properties["who"] for e in fake.events) == [
        "child",
        "parent-after",
        "parent-before",
    ]
    unique_ids = [
        e["attributes"]["unique_id"]
        for r in fake.requests
        for item in r.body["data"]["attributes"]["events-bulk-create"]["data"]  # type: ignore[index]
        for e in item["attributes"]["events"]["data"]
    ]
    assert len(unique_ids) == len(set(unique_ids)) == 3


def test_server_error_retries_go_through_the_rate_limiter() -> None:
    """Retries after 503s are paced like any request: the limit is never exceeded."""
    limits = {"POST /api/event-bulk-create-jobs": (2, 1000)}
    with FakeKlaviyo(rate_limits=limits) as fake:
        fake.fail_next(503, times=3)
        client = client_for(fake, rate_limits=limits, max_queue_size=10_000)
        for i in range(4000):
            client.track("Signed Up", {"n": i}, user_id=f"user-{i % 50}")
        assert client.flush(timeout=60)
        client.close()
        assert fake.throttled == 0
        assert [r.status for r in fake.requests].count(503) == 3
        assert len(fake.events) == 4000
        assert client.stats.retries >= 3


def test_request_in_flight_at_shutdown_is_not_called_dropped() -> None:
    """A call whose request is in flight when shutdown_timeout passes ends failed, saying
    Klaviyo may have it, and no worker thread outlives close()."""
    with FakeKlaviyo(latency=3.0) as fake:
        client = client_for(fake, shutdown_timeout=0.5)
        delivery = client.track("Signed Up", user_id="user-1")
        client.close()
        final = delivery.wait(timeout=1)
        assert final.status is DeliveryStatus.FAILED
        assert final.reason is not None
        assert "in flight" in final.reason
        assert "may have received it" in final.reason
        assert workers() == []


def test_dropped_client_sends_its_queue_and_ends_its_thread(fake: FakeKlaviyo) -> None:
    """A client dropped without close() still delivers what it queued; its thread ends."""
    import gc

    before = len(workers(WORKER, SENDER))
    client = client_for(fake, flush_interval=0.05)
    client.track("Signed Up", user_id="user-1")
    del client
    gc.collect()
    deadline = time.monotonic() + 10
    while len(workers(WORKER, SENDER)) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers(WORKER, SENDER)) == before
    assert len(fake.events) == 1


def test_queue_bytes_count_string_sizes() -> None:
    """max_queue_bytes counts big strings, so large properties cannot overrun the budget."""
    with FakeKlaviyo(latency=1.0) as fake:
        client = client_for(fake, max_queue_bytes=1_000_000)
        big = "x" * 90_000
        outcomes = [client.track("Signed Up", {"blob": big}, user_id="u").status for _ in range(30)]
        assert outcomes.count(DeliveryStatus.DROPPED) >= 15
        assert client.stats.queue_bytes <= 1_000_000
        client.close()


def test_client_dropped_before_exit_still_delivers(fake: FakeKlaviyo) -> None:
    """A Client built in a handler and dropped without close() is flushed at exit."""
    script = (
        _PRELUDE
        + f"""
import gc
def handler():
    c = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url=os.environ["FAKE_URL"],
               blueprint=default_blueprint().enable("Signed Up"), flush_interval=60.0)
    c.track("Signed Up", {{"from": "handler"}}, user_id="h-1")
handler()
gc.collect()
"""
    )
    done = _run(script, fake)
    assert done.returncode == 0, done.stderr
    assert [e.properties["from"] for e in fake.events] == ["handler"]


def test_close_from_on_delivery_ends_every_call() -> None:
    """close() called inside on_delivery does not hang and leaves no call queued."""
    with FakeKlaviyo() as fake:
        seen: list[Delivery] = []
        holder: list[Client] = []

        def callback(delivery: Delivery) -> None:
            seen.append(delivery)
            if len(seen) == 1:
                holder[0].close()

        client = client_for(fake, on_delivery=callback, flush_interval=0.05)
        holder.append(client)
        calls = [client.identify(f"u-{i}") for i in range(3)]
        finals = [call.wait(timeout=10) for call in calls]
        assert DeliveryStatus.QUEUED not in {f.status for f in finals}
        assert len(seen) == 3


def test_call_bigger_than_the_byte_budget_is_refused_at_once() -> None:
    """With block_on_full, a call larger than max_queue_bytes is dropped, not waited on."""
    with FakeKlaviyo() as fake:
        client = client_for(fake, max_queue_bytes=100_000, block_on_full=True)
        started = time.monotonic()
        delivery = client.identify("u-1", {"bio": "x" * 99_500})
        assert time.monotonic() - started < 2
        assert delivery.status is DeliveryStatus.DROPPED
        assert delivery.reason == "call larger than max_queue_bytes"
        client.close()


def test_server_error_retries_back_off() -> None:
    """Repeated 503s are retried with growing pauses, then the call fails."""
    with FakeKlaviyo() as fake:
        fake.fail_next(503, times=10)
        client = client_for(fake, max_retries=3, flush_interval=0.01)
        started = time.monotonic()
        delivery = client.track("Signed Up", user_id="u-1")
        final = delivery.wait(timeout=30)
        elapsed = time.monotonic() - started
        client.close()
        assert final.status is DeliveryStatus.FAILED
        assert final.http_status == 503
        assert [r.status for r in fake.requests] == [503] * 4
        assert elapsed >= 1.5  # pauses of 0.25-0.5 s, 0.5-1 s and 1-2 s


def test_request_sent_before_close_cannot_outlive_it() -> None:
    """A slow answer to a request sent before close() still lets close() end the thread."""
    with FakeKlaviyo(latency=8.0) as fake:
        client = client_for(fake, shutdown_timeout=0.5, flush_interval=0.01)
        delivery = client.track("Signed Up", user_id="u-1")
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 6
        assert workers() == []
        assert delivery.wait(timeout=1).status is DeliveryStatus.FAILED


def test_client_in_a_reference_cycle_is_collected_and_delivers(fake: FakeKlaviyo) -> None:
    """A dropped client whose on_delivery refers to it (a cycle) still delivers its call."""
    import gc

    def build() -> None:
        holder: dict[str, Client] = {}
        seen: list[Delivery] = []

        def callback(delivery: Delivery) -> None:
            seen.append(delivery)
            holder.get("client")  # the closure refers to the client: a reference cycle

        holder["client"] = client_for(fake, on_delivery=callback, flush_interval=0.05)
        holder["client"].track("Signed Up", user_id="cycle-1")

    build()
    gc.collect()
    deadline = time.monotonic() + 10
    while not fake.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.profile.external_id for e in fake.events] == ["cycle-1"]


def test_a_job_is_final_as_a_whole_before_its_callbacks(fake: FakeKlaviyo) -> None:
    """on_delivery sees every call of an accepted job final: close() or wait() there works."""
    calls: list[Delivery] = []
    seen: list[tuple[str, str | None]] = []
    client: Client | None = None

    def on_delivery(delivery: Delivery) -> None:
        if not seen and threading.current_thread().name == WORKER:
            seen.append((calls[-1].wait(timeout=2).status.value, None))
            assert client is not None
            client.close()  # from inside the callback, with 599 callbacks still to come
        seen.append((delivery.status.value, delivery.reason))

    client = client_for(fake, on_delivery=on_delivery, flush_interval=0.2)
    calls.extend(client.track("Signed Up", {"i": i}, user_id=f"u{i}") for i in range(600))
    assert client.flush(timeout=30)
    assert seen[0] == ("delivered", None)  # the last call, waited on from the first callback
    assert Counter(seen[1:]) == {("delivered", None): 600}
    assert client.stats.delivered == 600
    assert client.stats.failed == 0
    assert len(fake.events) == 600


def test_a_queued_delivery_can_be_copied(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    queued = client.track("Signed Up", user_id="u-1")
    twin = copy.deepcopy(queued)
    del queued
    client.close()
    assert twin.wait(timeout=10).status is DeliveryStatus.DELIVERED


def test_close_from_a_callback_while_a_request_is_in_flight_keeps_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() in on_delivery waits for the request in flight: its calls end delivered."""
    # The call checks refuse an event too large for a request; skip them here, so that the
    # worker's own last check fails the call and its callback runs on the worker thread.
    monkeypatch.setattr("klaviyo_signal._delivery.queue.MEASURE_ABOVE", 10**12)
    holder: dict[str, Client] = {}
    before = len(workers(WORKER, SENDER))

    def on_delivery(delivery: Delivery) -> None:
        if delivery.reason and "5 MB" in delivery.reason:
            holder["client"].close()

    with FakeKlaviyo(latency=1.0) as fake:
        client = client_for(fake, flush_interval=0.05, on_delivery=on_delivery)
        holder["client"] = client
        first = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
        time.sleep(0.4)  # the first job is in flight (1 s to answer)
        second = [client.track("Signed Up", user_id=f"second-{i}") for i in range(3)]
        time.sleep(0.3)  # the second job is sealed and waits for the first's answer
        # Too large to send: it fails on the worker thread, whose callback closes the client.
        big = client.track("Signed Up", {f"k{i}": "x" * 99_000 for i in range(60)}, user_id="u")
        assert big.wait(10).status is DeliveryStatus.FAILED
        finals = [d.wait(10) for d in first]
        assert {f.status for f in finals} == {DeliveryStatus.DELIVERED}
        # The job that never went out is reported so, and does not go out after all.
        assert {d.wait(10).status for d in second} == {DeliveryStatus.DROPPED}
        assert no_more_threads_than(before)
        time.sleep(1.2)
        assert len(fake.events) == 3


def test_an_internal_error_while_a_request_is_in_flight_keeps_its_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker bug fails the calls it touched; the request in flight ends as answered."""

    from klaviyo_signal._delivery import worker as _worker

    real = _worker.encode_queued

    def encode_or_break(item: tuple[object, ...], rule: object) -> bytes:
        if "user-poison" in item:
            raise RuntimeError("a bug")  # not an error the worker expects: it stops
        return real(item, rule)  # type: ignore[arg-type]

    monkeypatch.setattr(_worker, "encode_queued", encode_or_break)
    before = len(workers(WORKER, SENDER))
    with FakeKlaviyo(latency=1.0) as fake:
        client = client_for(fake, flush_interval=0.05)
        first = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
        time.sleep(0.4)  # the first job is in flight (1 s to answer)
        poison = client.track("Signed Up", user_id="user-poison")
        time.sleep(0.2)  # the worker stopped on it and waits for the answer in flight
        during = [client.track("Signed Up", user_id=f"during-{i}") for i in range(2)]
        assert poison.wait(10).status is DeliveryStatus.FAILED
        assert [d.wait(10).status for d in first] == [DeliveryStatus.DELIVERED] * 3
        # Calls made while it recovered never met the bug: a fresh thread sends them.
        assert [d.wait(10).status for d in during] == [DeliveryStatus.DELIVERED] * 2
        # The next call starts a fresh thread and goes out; nothing is left behind.
        later = client.track("Signed Up", user_id="user-later")
        assert client.flush(10)
        assert later.wait(0).status is DeliveryStatus.DELIVERED
        client.close()
        assert client.stats.failed_by_reason == {"internal error": 1}
        assert len(fake.events) == 6
        assert no_more_threads_than(before)
    assert "hit an internal error" in caplog.text


def test_a_request_that_breaks_on_its_way_frees_its_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (even a BaseException) in the request path fails its calls, not the endpoint."""

    from klaviyo_signal._klaviyo import transport as _transport

    real = _transport.KlaviyoAPI.post
    broken = {"left": 12}  # more than the endpoint's burst of 10 requests per second

    def post(self: object, path: str, body: bytes, *, timeout: float | None = None) -> object:
        if broken["left"]:
            broken["left"] -= 1
            raise KeyboardInterrupt  # say, from a hook; it must not hang the worker
        return real(self, path, body, timeout=timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(_transport.KlaviyoAPI, "post", post)
    with FakeKlaviyo() as fake:
        client = client_for(fake, flush_interval=0.01)
        for i in range(12):
            delivery = client.track("Signed Up", user_id=f"user-{i}")
            assert delivery.wait(10).status is DeliveryStatus.FAILED
        last = client.track("Signed Up", user_id="user-last")
        assert last.wait(10).status is DeliveryStatus.DELIVERED  # not held by a leaked slot
        client.close()
        assert client.stats.failed_by_reason == {"internal error": 12}
        assert len(fake.events) == 1


def test_close_while_the_worker_recovers_still_sends_what_came_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() during the recovery from a worker bug sends the calls made meanwhile."""

    from klaviyo_signal._delivery import worker as _worker

    real = _worker.encode_queued

    def encode_or_break(item: tuple[object, ...], rule: object) -> bytes:
        if "user-poison" in item:
            raise RuntimeError("a bug")
        return real(item, rule)  # type: ignore[arg-type]

    monkeypatch.setattr(_worker, "encode_queued", encode_or_break)
    before = len(workers(WORKER, SENDER))
    with FakeKlaviyo(latency=1.0) as fake:
        client = client_for(fake, flush_interval=0.05, shutdown_timeout=5)
        first = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
        time.sleep(0.4)  # the first job is in flight (1 s to answer)
        poison = client.track("Signed Up", user_id="user-poison")
        time.sleep(0.2)  # the worker hit the bug and waits for the answer in flight
        during = [client.track("Signed Up", user_id=f"during-{i}") for i in range(2)]
        client.close()
        assert poison.wait(0).status is DeliveryStatus.FAILED
        assert [d.wait(0).status for d in (*first, *during)] == [DeliveryStatus.DELIVERED] * 5
        assert len(fake.events) == 5
        assert no_more_threads_than(before)


PROFILE_IMPORT = "/api/profile-import"
PROFILE_JOBS = "/api/profile-bulk-import-jobs"


def wait_for_status(fake: FakeKlaviyo, path: str, status: int) -> None:
    """Poll until ``fake`` answered a request to ``path`` with ``status`` (up to 10 s)."""
    deadline = time.monotonic() + 10
    while not any(r.path == path and r.status == status for r in fake.requests):
        assert time.monotonic() < deadline, [(r.path, r.status) for r in fake.requests]
        time.sleep(0.01)


def test_a_429_on_profile_import_does_not_hold_back_events(fake: FakeKlaviyo) -> None:
    """A Retry-After on profile import jobs pauses identifies only: other people's events go on."""
    fake.fail_next(429, retry_after=20)
    client = client_for(fake, flush_interval=0.1, shutdown_timeout=0.5)
    identify = client.identify("user-0", {"email": "ann@example.com"})
    wait_for_status(fake, PROFILE_JOBS, 429)
    tracks = [client.track("Signed Up", {"n": i}, user_id=f"user-{i + 1}") for i in range(50)]
    assert {t.wait(timeout=5).status for t in tracks} == {DeliveryStatus.DELIVERED}
    assert identify.wait(timeout=0).status is DeliveryStatus.QUEUED  # still paused
    assert len(fake.events) == 50
    client.close()


def test_a_later_event_waits_for_its_persons_paused_identify(fake: FakeKlaviyo) -> None:
    """An event made after an identify is not sent before it, even while the identify is paused."""
    fake.fail_next(429, retry_after=1)
    client = client_for(fake, flush_interval=0.05)
    client.identify("user-1", {"email": "ann@example.com"})
    wait_for_status(fake, PROFILE_JOBS, 429)
    track = client.track("Signed Up", user_id="user-1")
    assert track.wait(timeout=10).status is DeliveryStatus.DELIVERED
    client.close()
    # The event goes once Klaviyo has imported the identify's job (polled), not before.
    assert [(r.path.split("/import-errors")[0], r.status) for r in fake.requests] == [
        (PROFILE_JOBS, 429),
        (PROFILE_JOBS, 202),
        (f"{PROFILE_JOBS}/{fake.import_jobs[0].id}", 200),
        (BULK, 202),
    ]


def test_an_identify_waits_for_its_persons_paused_earlier_events(fake: FakeKlaviyo) -> None:
    """An identify is not sent before the person's earlier events, even while they are paused."""
    fake.fail_next(429, retry_after=1)
    client = client_for(fake, flush_interval=0.05)
    track = client.track("Signed Up", user_id="user-1")
    wait_for_status(fake, BULK, 429)
    identify = client.identify("user-1", {"email": "ann@example.com"})
    assert identify.wait(timeout=10).status is DeliveryStatus.DELIVERED
    assert track.wait(timeout=0).status is DeliveryStatus.DELIVERED
    client.close()
    assert [(r.path, r.status) for r in fake.requests][:2] == [(BULK, 429), (BULK, 202)]
    assert fake.requests[2].path == PROFILE_JOBS
