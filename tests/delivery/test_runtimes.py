"""Short-lived processes and other runtimes: flush_after/flushing, Lambda, Cloud Run,
uWSGI, gevent and eventlet, each in a real subprocess where the runtime is involved."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from klaviyo_signal import Client, ConfigurationError, FlushReport
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-1", "revenue": 9.5, "currency": "USD"}
# The runtime notes name these; a test's own environment must not carry them into a child.
RUNTIME_VARIABLES = ("AWS_LAMBDA_FUNCTION_NAME", "K_SERVICE", "KLAVIYO_SIGNAL_DISABLED")


def python(
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    path: tuple[Path, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout; return its result."""
    child_env = {k: v for k, v in os.environ.items() if k not in RUNTIME_VARIABLES}
    child_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*path, ROOT))
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
        check=False,
    )


LAMBDA_HANDLER = """
    import logging, os, sys
    logging.basicConfig(level=logging.INFO)
    from klaviyo_signal import Client

    client = Client("AbC123", "pk_test_0123456789abcdef", base_url=sys.argv[1])

    def handler(event, context):
        for n in range(event["count"]):
            client.track("Order Completed", {"revenue": n}, user_id=event["user"])
        return {"statusCode": 200}

    if sys.argv[2] == "flush_after":
        handler = client.flush_after(timeout=20)(handler)
    for invocation in range(3):
        assert handler({"count": 4, "user": f"u-{invocation}"}, None) == {"statusCode": 200}
    sys.stdout.flush()
    sys.stderr.flush()
    # The environment is frozen, then recycled: no exit hook runs, no thread runs again.
    os._exit(0)
"""


def test_a_lambda_handler_with_flush_after_delivers_every_event_before_it_returns() -> None:
    """A Lambda-style handler decorated with flush_after has sent all its events when the
    environment is frozen after each invocation, and the Lambda note stays quiet."""
    with FakeKlaviyo(latency=0.05) as fake:
        done = python(
            LAMBDA_HANDLER,
            fake.url,
            "flush_after",
            env={"AWS_LAMBDA_FUNCTION_NAME": "checkout"},
        )
        assert done.returncode == 0, done.stderr
        assert len(fake.events) == 12
        assert {e.profile.external_id for e in fake.events} == {"u-0", "u-1", "u-2"}
    assert "AWS Lambda" not in done.stderr


def test_on_lambda_without_flush_after_the_first_call_says_what_to_use() -> None:
    """On Lambda a handler that does not flush gets one log line naming flush_after."""
    with FakeKlaviyo() as fake:
        done = python(
            LAMBDA_HANDLER, fake.url, "plain", env={"AWS_LAMBDA_FUNCTION_NAME": "checkout"}
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("AWS Lambda") == 1
        assert "@client.flush_after(timeout=2.0)" in done.stderr


def test_on_cloud_run_the_first_background_call_says_what_to_use() -> None:
    """With K_SERVICE set, the first background call logs one line about Cloud Run's CPU."""
    done = python(
        """
        import logging
        logging.basicConfig()
        from klaviyo_signal import Client
        client = Client("AbC123", "pk_test_0123456789abcdef", base_url="http://127.0.0.1:9")
        for n in range(3):
            client.track("Order Completed", {"revenue": n}, user_id="u")
        client.close()
        """,
        env={"K_SERVICE": "shop"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Cloud Run") == 1
    assert "install_signal_handlers" in done.stderr


@pytest.mark.parametrize(
    ("options", "logged"),
    [("{}", True), ("{'enable-threads': True}", False), ("{'threads': b'4'}", False)],
)
def test_uwsgi_without_enable_threads_logs_once_how_to_fix_it(
    tmp_path: Path, options: str, logged: bool
) -> None:
    """Under uWSGI without enable-threads (or threads) the first call logs, once, how to
    fix it; with threads on it says nothing.

    uWSGI cannot run here, so the child finds a stand-in ``uwsgi`` module on its path
    holding only the ``opt`` dict that real uWSGI embeds.
    """
    (tmp_path / "uwsgi.py").write_text(f"opt = {options}\n")
    done = python(
        """
        import logging
        logging.basicConfig()
        from klaviyo_signal import Client
        client = Client("AbC123", "pk_test_0123456789abcdef", base_url="http://127.0.0.1:9",
                        shutdown_timeout=0.5)
        for n in range(3):
            client.track("Order Completed", {"revenue": n}, user_id="u")
        client.close()
        """,
        path=(tmp_path,),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("uWSGI runs without enable-threads") == int(logged)
    assert ("--enable-threads" in done.stderr) is logged


GREEN_SENDER = """
    import os, posix, sys
    {patch}
    from klaviyo_signal import Client

    client = Client("AbC123", "pk_test_0123456789abcdef", base_url=sys.argv[1],
                    flush_interval=0.2)
    {late}
    client.track("Order Completed", {{"revenue": 0}}, user_id="before-fork")
    child = os.fork()  # as a preforking server does after loading the app
    who = "child" if child == 0 else "parent"

    def work(n):
        for j in range(10):
            client.track("Order Completed", {{"revenue": j}}, user_id=f"{{who}}-{{n}}")
            {sleep}(0)

    {join}
    # One write(2) per line: the two processes share the pipe, and a patched stdout may
    # write a print() in pieces. posix.write, not eventlet's os.write: that one waits in
    # the hub for the pipe to be writable, and a forked child shares the parent's epoll
    # set, where the pipe is one entry: the parent's write removes it, the child waits on.
    status = client.track("Order Completed", user_id=f"{{who}}-waited").wait(20).status
    posix.write(1, f"{{who}} {{status}}\\n".encode())
    posix.write(1, f"{{who}} {{client.flush(20)}}\\n".encode())
    for j in range(20):  # left to the exit hook
        client.track("Order Completed", {{"revenue": j}}, user_id=f"{{who}}-at-exit")
    if child:
        os.waitpid(child, 0)
"""


@pytest.mark.parametrize(
    "runtime",
    [
        pytest.param(
            {
                "module": "gevent",
                "patch": "from gevent import monkey; monkey.patch_all(); import gevent",
                "late": "",
                "sleep": "gevent.sleep",
                "join": "gevent.joinall([gevent.spawn(work, n) for n in range(5)])",
            },
            id="gevent",
        ),
        pytest.param(
            {
                "module": "gevent",
                "patch": "",
                # Patched once the Client exists, as gunicorn's gevent worker does after
                # a --preload master built it.
                "late": "from gevent import monkey; monkey.patch_all(); import gevent",
                "sleep": "gevent.sleep",
                "join": "gevent.joinall([gevent.spawn(work, n) for n in range(5)])",
            },
            id="gevent-patched-after-the-client",
        ),
        pytest.param(
            {
                "module": "eventlet",
                "patch": "import eventlet; eventlet.monkey_patch()",
                "late": "",
                "sleep": "eventlet.sleep",
                "join": (
                    "pool = eventlet.GreenPool(); [pool.spawn(work, n) for n in range(5)]; "
                    "pool.waitall()"
                ),
            },
            id="eventlet",
        ),
    ],
)
def test_monkey_patched_green_threads_deliver_everything_and_exit(runtime: dict[str, str]) -> None:
    """Under gevent's patch_all (and eventlet's monkey_patch) greenlets' calls, a waited
    Delivery, a flush and the exit hook's flush all deliver, in a forked child too (which
    does not send the parent's call again), and both processes exit cleanly."""
    pytest.importorskip(runtime["module"])
    with FakeKlaviyo(latency=0.05) as fake:
        done = python(GREEN_SENDER.format(**runtime), fake.url, timeout=90)
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split("\n")) == sorted(
            ["child delivered", "parent delivered", "child True", "parent True", ""]
        )
        per_process = 50 + 1 + 20
        assert len(fake.events) == 1 + 2 * per_process
        # The parent's call goes once, from the parent: a copy of its worker's green
        # thread survives the fork, and must not send it again from the child.
        assert sum("before-fork" in str(r.body) for r in fake.requests) == 1
    assert "Traceback" not in done.stderr


def test_flush_after_flushes_a_sync_handler_and_passes_its_result_and_errors() -> None:
    """flush_after returns the handler's value, re-raises its exception, and flushes both
    times, so each call's events have arrived when it ends."""
    with FakeKlaviyo() as fake:
        client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60)

        @client.flush_after
        def handler(user: str, fail: bool = False) -> str:
            client.track("Order Completed", ORDER, user_id=user)
            if fail:
                raise RuntimeError("boom")
            return f"ok {user}"

        assert handler("u-1") == "ok u-1"
        assert handler.__name__ == "handler"
        assert len(fake.events) == 1
        with pytest.raises(RuntimeError, match="boom"):
            handler("u-2", fail=True)
        assert len(fake.events) == 2
        client.close()


def test_flushing_reports_and_logs_once_what_did_not_make_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flushing() block whose budget runs out says how many calls are left, in its report
    and in one WARNING line; a block that makes it reports flushed."""
    with FakeKlaviyo(latency=1.0) as fake:
        client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url)
        with caplog.at_level(logging.WARNING, logger="klaviyo_signal"):
            with client.flushing(timeout=0.05) as report:
                for n in range(4):
                    client.track("Order Completed", ORDER, user_id=f"u-{n}")
            assert report == FlushReport(timeout=0.05, flushed=False, left=4)
            warnings = [r for r in caplog.records if "flush budget" in r.getMessage()]
            assert len(warnings) == 1
            assert "4 call(s)" in warnings[0].getMessage()
            assert "flushing() block" in warnings[0].getMessage()
            with client.flushing(timeout=30) as later:
                pass
        assert later == FlushReport(timeout=30, flushed=True, left=0)
        client.close()
        assert len(fake.events) == 4


@pytest.mark.parametrize("budget", [0, -1, "2", None, True])
def test_a_flush_budget_must_be_a_positive_number(budget: object) -> None:
    """flush_after and flushing refuse a budget that is not seconds above 0, naming timeout."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9") as client:
        with pytest.raises(ConfigurationError, match="timeout"):
            client.flushing(timeout=budget)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="timeout"):
            client.flush_after(timeout=budget)  # type: ignore[arg-type]
