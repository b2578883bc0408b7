"""The durable outbox: real SQLite files, real processes, kill -9, fork."""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from klaviyo_signal import Client, ConfigurationError, Delivery, DeliveryStatus, default_blueprint
from klaviyo_signal._delivery import outbox
from klaviyo_signal._klaviyo.models import Identity, Location, Profile, Subscription
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY
from tests.delivery.test_lifecycle import in_forked_child, needs_fork

BLUEPRINT = default_blueprint().enable("Signed Up")
ROOT = Path(__file__).resolve().parents[2]


# Klaviyo at a port nothing listens on, and a close() that gives up at once.
UNREACHABLE: dict[str, Any] = {"shutdown_timeout": 0.2, "timeout": 0.2, "max_retries": 0}


def client_for(fake: FakeKlaviyo | str, outbox: Path | None, **options: Any) -> Client:
    options.setdefault("flush_interval", 0.05)
    url = fake if isinstance(fake, str) else fake.url
    return Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=url, blueprint=BLUEPRINT, outbox=outbox, **options
    )


def rows(path: Path) -> int:
    """The calls the outbox file holds."""
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM calls").fetchone()[0])


def sent_unique_ids(fake: FakeKlaviyo) -> list[str]:
    """The unique_id of every event in every bulk request the fake got (repeats included)."""
    ids = []
    for request in fake.requests:
        if request.path.endswith("/event-bulk-create-jobs") and isinstance(request.body, dict):
            for item in request.body["data"]["attributes"]["events-bulk-create"]["data"]:
                for event in item["attributes"]["events"]["data"]:
                    ids.append(event["attributes"]["unique_id"])
    return ids


def recorded(fake: FakeKlaviyo) -> list[str]:
    return [str(event.unique_id) for event in fake.events]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def producer(url: str, outbox: Path, count: int, **options: object) -> subprocess.Popen[str]:
    """A subprocess that queues ``count`` calls and prints each queued message id."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from klaviyo_signal import Client
        client = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url={url!r},
                        outbox={str(outbox)!r}, **{options!r})
        for i in range({count}):
            d = client.track("Order Completed", {{"order_id": str(i), "revenue": 1.0}},
                             user_id="u" + str(i % 7))
            if d.status.value == "queued":
                print(d.message_id, flush=True)
        print("done", flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )


def read_until_done(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    queued: list[str] = []
    for line in process.stdout:
        if line.strip() == "done":
            return queued
        queued.append(line.strip())
    raise AssertionError("the producer ended before it queued every call")


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def test_a_killed_process_calls_are_sent_once_by_the_next(
    fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """Every call that returned ``queued`` in a process killed by SIGKILL is recorded
    exactly once at Klaviyo after a new Client opens the outbox."""
    outbox = tmp_path / "outbox.db"
    child = producer(fake.url, outbox, 5000, flush_interval=0.01)
    assert child.stdout is not None
    queued = [child.stdout.readline().strip() for _ in range(1000)]
    child.send_signal(signal.SIGKILL)  # while it queues and sends
    child.wait(10)
    queued += [line.strip() for line in child.stdout if line.strip() != "done"]
    child.stdout.close()
    seen: list[Delivery] = []
    with client_for(fake, outbox, on_delivery=seen.append) as client:
        assert client.flush(20)
        stats = client.stats
    events = recorded(fake)
    assert len(events) == len(set(events))  # each once
    assert set(queued) <= set(events)  # every call that returned queued
    # At most the call the kill interrupted between its commit and its print (committed,
    # so sent; the caller never saw it return).
    assert len(events) - len(queued) <= 1
    assert set(sent_unique_ids(fake)) == set(events)
    assert rows(outbox) == 0
    assert stats.delivered == len(seen)  # the replayed calls count, and reach on_delivery
    assert {d.message_id for d in seen} <= set(events)


def test_calls_unsent_at_close_stay_for_the_next_process(fake: FakeKlaviyo, tmp_path: Path) -> None:
    """Calls close() could not send (Klaviyo unreachable) end ``dropped`` or ``failed`` but
    stay in the outbox, and the next Client sends them: events, a profile import and a
    subscription, as they were made."""
    outbox = tmp_path / "outbox.db"
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens
    client = client_for(unreachable, outbox, **UNREACHABLE)
    deliveries = [client.track("Signed Up", {"n": i}, user_id="u") for i in range(5)]
    deliveries.append(client.identify("u", {"email": "jane@example.com", "first_name": "Jane"}))
    deliveries.append(client.subscribe(email="jane@example.com", list_id="Y6nRLr"))
    client.close()
    assert {d.wait(1).status for d in deliveries} <= {DeliveryStatus.DROPPED, DeliveryStatus.FAILED}
    assert rows(outbox) == 7
    with client_for(fake, outbox) as again:
        assert again.flush(20)
        assert again.stats.delivered == 7
    assert sorted(recorded(fake)) == sorted(d.message_id for d in deliveries[:5])
    profile = fake.profile_for(email="jane@example.com")
    assert profile is not None
    assert profile.external_id == "u"
    assert profile.attributes["first_name"] == "Jane"
    assert profile.lists == ("Y6nRLr",)
    assert rows(outbox) == 0


def test_a_live_process_keeps_its_calls(fake: FakeKlaviyo, tmp_path: Path) -> None:
    """A process that opens an outbox another live process writes to sends none of that
    process's calls (one sender per call); each process's calls are recorded once."""
    outbox = tmp_path / "outbox.db"
    child = producer(fake.url, outbox, 50, flush_interval=3600)
    try:
        queued = read_until_done(child)  # queued in the child, none sent yet
        with client_for(fake, outbox) as client:
            mine = client.track("Signed Up", {}, user_id="parent")
            assert client.flush(20)
            assert mine.wait(5).status is DeliveryStatus.DELIVERED
        assert recorded(fake) == [mine.message_id]
    finally:
        kill(child)
    # The child is gone: the next Client takes its calls over.
    with client_for(fake, outbox) as client:
        assert client.flush(20)
    assert sorted(recorded(fake)) == sorted([*queued, mine.message_id])
    assert rows(outbox) == 0


def test_two_processes_on_one_file_each_deliver_their_calls(
    fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """Two processes writing one outbox at once each get their calls delivered, once."""
    outbox = tmp_path / "outbox.db"
    script = textwrap.dedent(
        f"""
        import sys
        from klaviyo_signal import Client
        with Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url={fake.url!r},
                    outbox={str(outbox)!r}, flush_interval=0.05) as client:
            ds = [client.track("Order Completed", {{"order_id": str(i)}}, user_id=sys.argv[1])
                  for i in range(200)]
            assert client.flush(30)
            print(sum(d.wait(5).status.value == "delivered" for d in ds))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True, env=env
        )
        for name in ("a", "b")
    ]
    outputs = [child.communicate(timeout=60)[0].strip() for child in children]
    assert outputs == ["200", "200"]
    assert len(recorded(fake)) == 400 == len(set(recorded(fake)))
    assert len(sent_unique_ids(fake)) == 400  # none sent twice
    assert rows(outbox) == 0


@needs_fork
def test_a_forked_child_sends_its_own_calls_only(fake: FakeKlaviyo, tmp_path: Path) -> None:
    """After fork the child writes the outbox through its own connection and sends only its
    own calls; the parent's stay the parent's, and each is recorded once."""
    outbox = tmp_path / "outbox.db"
    client = client_for(fake, outbox, flush_interval=3600)
    parents = [client.track("Signed Up", {"n": i}, user_id="p") for i in range(20)]

    def child() -> str:
        delivery = client.track("Signed Up", {}, user_id="child")
        client.flush(20)
        return f"{delivery.message_id}|{delivery.wait(5).status.value}"

    child_id, status = in_forked_child(child).split("|")
    assert status == "delivered"
    assert recorded(fake) == [child_id]
    assert rows(outbox) == 20  # the parent's, still waiting
    assert client.flush(20)
    client.close()
    assert sorted(recorded(fake)) == sorted([child_id, *(d.message_id for d in parents)])
    assert rows(outbox) == 0


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    """A file that is not a SQLite database fails the Client with ConfigurationError."""
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="not a usable outbox"):
        client_for("http://127.0.0.1:9", path)


def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    """A SQLite outbox whose pages were overwritten fails the Client with ConfigurationError."""
    path = tmp_path / "outbox.db"
    client = client_for("http://127.0.0.1:9", path, flush_interval=3600, **UNREACHABLE)
    for i in range(300):
        client.track("Signed Up", {"n": "x" * 200}, user_id=str(i))
    client.close()  # the calls stay, in the database file itself once it is closed
    data = bytearray(path.read_bytes())
    data[3000:9000] = os.urandom(6000)
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigurationError, match="outbox"):
        client_for("http://127.0.0.1:9", path)


def test_an_unwritable_path_is_refused(tmp_path: Path) -> None:
    """An outbox in a directory that does not exist, or a directory, fails with
    ConfigurationError naming the path."""
    missing = tmp_path / "no-such-dir" / "outbox.db"
    with pytest.raises(ConfigurationError, match="no-such-dir"):
        client_for("http://127.0.0.1:9", missing)
    with pytest.raises(ConfigurationError, match="is a directory"):
        client_for("http://127.0.0.1:9", tmp_path)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError, match="cannot open"):
        client_for("http://127.0.0.1:9", a_file / "outbox.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_file_is_refused(tmp_path: Path) -> None:
    """An outbox file the process may not write fails with ConfigurationError."""
    path = tmp_path / "outbox.db"
    client_for("http://127.0.0.1:9", path).close()
    path.chmod(0o400)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigurationError, match="outbox"):
            client_for("http://127.0.0.1:9", path)
    finally:
        tmp_path.chmod(0o700)


def test_outbox_options_are_checked() -> None:
    """An outbox that is not a path, or one with sync_mode, fails with ConfigurationError."""
    with pytest.raises(ConfigurationError, match="outbox: expected"):
        client_for("http://127.0.0.1:9", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="outbox"):
        client_for("http://127.0.0.1:9", ":memory:")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sync_mode"):
        client_for("http://127.0.0.1:9", Path("x.db"), sync_mode=True)


def test_max_queue_size_bounds_the_file(tmp_path: Path) -> None:
    """A call over max_queue_size is dropped ``queue full`` and never written to the outbox."""
    path = tmp_path / "outbox.db"
    client = client_for(
        "http://127.0.0.1:9", path, flush_interval=3600, max_queue_size=5, **UNREACHABLE
    )
    statuses = [client.track("Signed Up", {}, user_id=str(i)).status for i in range(8)]
    assert statuses == [DeliveryStatus.QUEUED] * 5 + [DeliveryStatus.DROPPED] * 3
    assert rows(path) == 5
    big = client_for("http://127.0.0.1:9", tmp_path / "b.db", max_queue_bytes=5_000, **UNREACHABLE)
    assert big.track("Signed Up", {"s": "x" * 6000}, user_id="u").reason == (
        "call larger than max_queue_bytes"
    )
    assert rows(tmp_path / "b.db") == 0
    client.close()
    big.close()


def scenario(fake: FakeKlaviyo, outbox: Path | None) -> tuple[list[tuple[str, str, str]], object]:
    """Run one mix of calls; return each call's (kind, status, reason) and the stats."""
    seen: list[Delivery] = []
    kinds: dict[str, str] = {}
    with client_for(fake, outbox, on_delivery=seen.append) as client:
        calls = {
            "track": client.track("Order Completed", {"order_id": "1"}, user_id="u"),
            "full": client.track("Signed Up", {"plan": {"tier": "pro"}}, user_id="u"),
            "page": client.page("Home", {"url": "https://example.com"}, anonymous_id="a1"),
            "identify": client.identify("u", {"email": "u@example.com", "first_name": "U"}),
            "subscribe": client.subscribe(email="u@example.com", list_id="Y6nRLr"),
            "named": client.track("Signed Up", {}, user_id="u", message_id="same"),
            "repeat": client.track("Signed Up", {}, user_id="u", message_id="same"),
            "disabled": client.track("Not Enabled", {}, user_id="u"),
        }
        kinds = {d.message_id: kind for kind, d in calls.items() if kind != "repeat"}
        kinds["same"] = "named"
        assert client.flush(20)
        stats = client.stats
    outcomes = sorted((kinds.get(d.message_id, "?"), d.status.value, str(d.reason)) for d in seen)
    return outcomes, attrs_without_bytes(stats)


def attrs_without_bytes(stats: object) -> object:
    values = (
        dict(vars(stats))
        if hasattr(stats, "__dict__")
        else {
            name: getattr(stats, name)
            for name in stats.__slots__  # type: ignore[attr-defined]
        }
    )
    values.pop("bytes_sent")
    return values


def test_outcomes_stats_and_callbacks_match_the_memory_queue(tmp_path: Path) -> None:
    """The same calls end with the same outcomes, stats and callbacks with and without
    an outbox."""
    with FakeKlaviyo() as fake:
        memory = scenario(fake, None)
    with FakeKlaviyo() as fake:
        durable = scenario(fake, tmp_path / "outbox.db")
    assert durable == memory
    assert rows(tmp_path / "outbox.db") == 0


def test_a_record_naming_other_code_is_not_run(
    fake: FakeKlaviyo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose pickle names code outside the library's models is refused (logged and
    removed), never run, and the outbox's other calls are still sent."""
    path = tmp_path / "outbox.db"
    marker = tmp_path / "ran"
    client = client_for("http://127.0.0.1:9", path, flush_interval=3600, **UNREACHABLE)
    kept = client.track("Signed Up", {}, user_id="u")
    client.close()

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))

    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO calls (slot, rec) VALUES (0, ?)", (pickle.dumps(Evil()),))
    with client_for(fake, path) as again:
        assert again.flush(20)
    assert not marker.exists()
    assert recorded(fake) == [kept.message_id]
    assert "could not be read" in caplog.text
    assert rows(path) == 0


def test_only_what_klaviyo_answered_leaves_the_file(fake: FakeKlaviyo, tmp_path: Path) -> None:
    """A call Klaviyo refuses (400) ends ``failed`` and leaves the outbox; one that ends on
    5xx after every retry ends ``failed`` too but stays, and the next Client sends it."""
    path = tmp_path / "outbox.db"
    with client_for(fake, path, max_retries=0) as client:
        fake.fail_next(400)
        refused = client.track("Signed Up", {}, user_id="a")
        assert refused.wait(10).status is DeliveryStatus.FAILED
        wait_for(lambda: rows(path) == 0)  # the row goes just after the Delivery is final
        fake.fail_next(503)
        unanswered = client.track("Signed Up", {}, user_id="b")
        assert unanswered.wait(10).status is DeliveryStatus.FAILED
        assert client.flush(10)
        assert rows(path) == 1
    with client_for(fake, path) as again:
        assert again.flush(20)
    assert recorded(fake) == [unanswered.message_id]
    assert rows(path) == 0


def test_a_full_disk_drops_the_call_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call the outbox cannot write (the disk is full) ends ``dropped`` with a reason
    naming the outbox, counted in stats and logged once, instead of queued unprotected."""
    client = client_for(
        "http://127.0.0.1:9", tmp_path / "outbox.db", flush_interval=3600, **UNREACHABLE
    )
    # A full disk, as SQLite sees one: the file may not grow by another page.
    connection = client._worker._queue.outbox._connection  # type: ignore[union-attr]
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count={pages}")
    deliveries = [client.track("Signed Up", {"s": "x" * 300}, user_id="u") for _ in range(20)]
    dropped = [d for d in deliveries if d.status is DeliveryStatus.DROPPED]
    assert dropped
    assert all(str(d.reason).startswith("outbox write failed: ") for d in dropped)
    assert sum(client.stats.dropped_by_reason.values()) == len(dropped)
    assert caplog.text.count("could not write a call to outbox") == 1
    client.close()


def test_a_disabled_client_leaves_the_outbox_for_the_next_process(
    fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """A disabled Client sends nothing, not even the calls an earlier process left in its
    outbox; they stay in the file for the next Client that is enabled."""
    outbox = tmp_path / "outbox.db"
    client = client_for("http://127.0.0.1:9", outbox, **UNREACHABLE)
    client.track("Signed Up", {"n": 1}, user_id="u")
    client.close()
    assert rows(outbox) == 1
    with client_for(fake, outbox, disabled=True) as disabled:
        assert disabled.flush(5)
    assert fake.requests == []
    assert rows(outbox) == 1


def test_every_name_a_record_may_hold_is_where_it_is_allowed() -> None:
    """Each allowed name resolves to the object of that module and name (a class that moves
    must move in the allow-list too), and every model a call becomes round-trips."""
    for module, name in outbox._ALLOWED:
        found = getattr(importlib.import_module(module), name)
        if isinstance(found, type) and module.startswith("klaviyo_signal"):
            assert (found.__module__, found.__qualname__) == (module, name)
    identity = Identity(email="ada@example.com")
    objects = (
        Profile(identity=identity, location=Location(city="Leeds")),
        Subscription(action="subscribe", message_id="m-2", channels=("email",), email="a@b.co"),
    )
    assert outbox.load(outbox.dump_objects("m-1", 10, True, objects))[3] == objects


def test_a_record_from_the_release_before_the_move_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows written when Identity and Subscription lived in _calls replay after an upgrade."""
    monkeypatch.setattr(Identity, "__module__", "klaviyo_signal._calls.identity")
    monkeypatch.setattr(Subscription, "__module__", "klaviyo_signal._calls.subscription")
    sub = Subscription(action="subscribe", message_id="m-2", channels=("email",), email="a@b.co")
    objects = (Profile(identity=Identity(external_id="u-1")), sub)
    data = outbox.dump_objects("m-1", 10, True, objects)
    assert b"klaviyo_signal._calls.identity" in data
    monkeypatch.undo()
    assert outbox.load(data)[3] == objects
