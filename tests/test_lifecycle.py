"""Process lifetime: callbacks that call back in, fork, multiprocessing, signals, import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from klaviyo_signal import Client, Delivery, DeliveryStatus, default_blueprint
from klaviyo_signal.testing import FakeKlaviyo

from .conftest import PRIVATE_KEY, PUBLIC_KEY

BLUEPRINT = default_blueprint().enable("Signed Up")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def finishes(scenario: Callable[[], None], timeout: float = 30.0) -> None:
    """Run ``scenario`` on a thread; fail (instead of hanging the suite) if it never ends."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scenario()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the scenario was still blocked after {timeout} s"
    if errors:
        raise errors[0]


def client_for(fake: FakeKlaviyo, **options: object) -> Client:
    options.setdefault("flush_interval", 0.05)
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT, **options)  # type: ignore[arg-type]


# -- calls from on_delivery -------------------------------------------------------------


def test_track_from_on_delivery_with_block_on_full_never_deadlocks(fake: FakeKlaviyo) -> None:
    """A callback that tracks on a full blocking queue neither hangs the worker nor the
    threads waiting for room; its own call is dropped with ``queue full`` if none is left."""
    follow_ups: list[Delivery] = []
    client_box: list[Client] = []

    def on_delivery(delivery: Delivery) -> None:
        if delivery.message_id.startswith("first-"):
            follow_ups.append(client_box[0].track("Signed Up", {"follow": 1}, user_id="f"))

    client = client_for(fake, max_queue_size=5, block_on_full=True, on_delivery=on_delivery)
    client_box.append(client)
    firsts: list[Delivery] = []

    def scenario() -> None:
        for i in range(30):
            firsts.append(client.track("Signed Up", {"n": i}, user_id="u", message_id=f"first-{i}"))
        assert client.flush(timeout=20)

    try:
        finishes(scenario)
    finally:
        client.close()
    assert [d.wait(5).status for d in firsts] == [DeliveryStatus.DELIVERED] * 30
    assert len(follow_ups) == 30
    for d in follow_ups:
        final = d.wait(5)
        assert final.status is DeliveryStatus.DELIVERED or final.reason == "queue full"
    assert len(fake.events) == 30 + sum(
        d.wait(5).status is DeliveryStatus.DELIVERED for d in follow_ups
    )


def test_room_is_free_before_on_delivery_runs(fake: FakeKlaviyo) -> None:
    """In on_delivery the call just ended no longer takes queue room, so a follow-up fits."""
    follow_ups: list[Delivery] = []
    client_box: list[Client] = []

    def on_delivery(delivery: Delivery) -> None:
        if delivery.message_id == "first":
            follow_ups.append(client_box[0].track("Signed Up", user_id="f"))

    client = client_for(fake, max_queue_size=1, on_delivery=on_delivery)
    client_box.append(client)
    try:
        client.track("Signed Up", user_id="u", message_id="first")
        assert client.flush(timeout=20)
        assert client.flush(timeout=20)
    finally:
        client.close()
    assert [d.status for d in follow_ups] == [DeliveryStatus.QUEUED]
    assert follow_ups[0].wait(5).status is DeliveryStatus.DELIVERED


def test_flush_from_on_delivery_returns_at_once(fake: FakeKlaviyo) -> None:
    """flush() inside on_delivery returns False at once while calls are queued, instead of
    blocking the worker for its whole timeout."""
    results: list[tuple[bool, float]] = []
    client_box: list[Client] = []

    def on_delivery(delivery: Delivery) -> None:
        if delivery.message_id == "first":
            client_box[0].track("Signed Up", user_id="f")
            started = time.monotonic()
            results.append((client_box[0].flush(timeout=10), time.monotonic() - started))

    client = client_for(fake, on_delivery=on_delivery)
    client_box.append(client)

    def scenario() -> None:
        client.track("Signed Up", user_id="u", message_id="first")
        assert client.flush(timeout=30)

    try:
        finishes(scenario)
    finally:
        client.close()
    [(flushed, elapsed)] = results
    assert flushed is False
    assert elapsed < 5
    assert len(fake.events) == 2


# -- fork -------------------------------------------------------------------------------


def in_forked_child(body: Callable[[], str], timeout: float = 20.0) -> str:
    """Run ``body`` in a forked child; return what it returned, failing if it hangs."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.write(write_end, body().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child was still blocked after {timeout} s")
            time.sleep(0.02)
        return pipe.read().decode()


@needs_fork
def test_wait_in_a_forked_child_on_a_parents_delivery_returns_at_once() -> None:
    """Delivery.wait() in a forked child on a call the parent queued returns at once,
    still queued, with a reason saying the call belongs to the parent process."""
    with FakeKlaviyo(latency=1.0) as fake:
        client = client_for(fake, flush_interval=60.0)
        delivery = client.track("Signed Up", user_id="u")

        def child() -> str:
            started = time.monotonic()
            final = delivery.wait()
            return f"{final.status.value}|{time.monotonic() - started:.3f}|{final.reason}"

        try:
            status, elapsed, reason = in_forked_child(child).split("|", 2)
        finally:
            client.close()
        assert status == "queued"
        assert float(elapsed) < 5
        assert f"process {os.getpid()}" in reason
        assert "forked" in reason
        assert delivery.wait(5).status is DeliveryStatus.DELIVERED


def run_script(script: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with this worktree's package."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_PRELUDE = f"""
import os, sys
from klaviyo_signal import Client, default_blueprint
def make_client(**options):
    options.setdefault("flush_interval", 60.0)
    return Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url=os.environ.get("FAKE_URL", "http://127.0.0.1:9"),
                  blueprint=default_blueprint().enable("Signed Up"), **options)
"""


# -- import -----------------------------------------------------------------------------


def test_import_registers_no_fork_hook() -> None:
    """Importing klaviyo_signal registers no at-fork hook; building the first Client does."""
    script = """
    import os
    hooks = []
    real = os.register_at_fork
    def spy(**kwargs):
        hooks.extend(getattr(f, "__module__", "") or "" for f in kwargs.values())
        return real(**kwargs)
    os.register_at_fork = spy
    import klaviyo_signal, klaviyo_signal.testing
    ours = [m for m in hooks if m.startswith("klaviyo_signal")]
    print("import:", ours)
    klaviyo_signal.Client("AbC123", "pk_" + "x" * 34)
    ours = [m for m in hooks if m.startswith("klaviyo_signal")]
    print("client:", len(ours) > 0)
    """
    done = run_script(textwrap.dedent(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["import: []", "client: True"]


@needs_fork
def test_children_forked_before_the_first_client_get_distinct_message_ids() -> None:
    """Processes forked before any Client exists never repeat each other's message ids."""
    script = _PRELUDE + textwrap.dedent(
        """
    ids = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            client = make_client()
            os.write(w, client.track("Signed Up", user_id="u").message_id.encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        ids.append(os.read(r, 100).decode())
    ids.append(make_client().track("Signed Up", user_id="u").message_id)
    print(len(set(ids)), len(ids))
    os._exit(0)
    """
    )
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "3"]


# -- multiprocessing --------------------------------------------------------------------

_MULTIPROCESSING = f"""
import concurrent.futures, multiprocessing, os, sys
from klaviyo_signal import Client, default_blueprint

_client = None

def client():
    global _client
    if _client is None:
        _client = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url=os.environ["FAKE_URL"],
                         blueprint=default_blueprint().enable("Signed Up"), flush_interval=60.0)
    return _client

def work(tag):
    for i in range(10):
        client().track("Signed Up", {{"tag": tag, "i": i}}, user_id="u")
    return os.getpid()

if __name__ == "__main__":
    method, build_in_parent = sys.argv[1], sys.argv[2] == "parent"
    ctx = multiprocessing.get_context(method)
    if build_in_parent:
        client()
    process = ctx.Process(target=work, args=("process",))
    process.start()
    process.join()
    assert process.exitcode == 0, process.exitcode
    pool = ctx.Pool(2)
    pool.map(work, ["pool-1", "pool-2"])
    pool.close()
    pool.join()
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        list(executor.map(work, ["executor-1", "executor-2"]))
"""


@needs_fork
@pytest.mark.parametrize(
    ("method", "where"), [("fork", "parent"), ("fork", "child"), ("forkserver", "child")]
)
def test_multiprocessing_children_send_what_they_queued(
    fake: FakeKlaviyo, tmp_path: Path, method: str, where: str
) -> None:
    """Process, Pool and ProcessPoolExecutor workers that end with os._exit() still send
    every call they queued, whether the Client was built in the parent or the child."""
    script = tmp_path / "app.py"
    script.write_text(_MULTIPROCESSING)
    done = subprocess.run(
        [sys.executable, str(script), method, where],
        env={**os.environ, "FAKE_URL": fake.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tags = sorted({e.properties["tag"] for e in fake.events})
    assert tags == ["executor-1", "executor-2", "pool-1", "pool-2", "process"]
    assert len(fake.events) == 50
