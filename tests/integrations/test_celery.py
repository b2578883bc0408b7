"""The Celery integration: a task's calls carry the enqueuing request's context, and are sent
at task end and at worker shutdown, run eagerly and by a real worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("celery")

from celery import Celery

from klaviyo_signal import Client, ConfigurationError, current_context, request_context
from klaviyo_signal.integrations.celery import Installation, install
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def broker_app(folder: Path) -> Celery:
    """Return a producer app on the same filesystem broker as celery_site.py's worker."""
    app = Celery("producer", broker="filesystem://", set_as_current=False)
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
        "control_folder": str(folder / "control"),
    }
    return app


def wait_for(condition: Callable[[], bool], timeout: float = 90.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass (a busy machine is slow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def installed(fake: FakeKlaviyo) -> Iterator[tuple[Client, Installation]]:
    """A client installed into Celery's signals, uninstalled after the test."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True) as client:
        installation = install(client)
        try:
            yield client, installation
        finally:
            installation.uninstall()


def test_an_eager_task_runs_in_the_callers_context(
    installed: tuple[Client, Installation], fake: FakeKlaviyo
) -> None:
    """task.delay() under task_always_eager sends with the request's identity; explicit wins."""
    client, _ = installed
    app = Celery("eager", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task
    def order(explicit: bool) -> None:
        if explicit:
            client.track("Order Completed", user_id="customer-7")
        else:
            client.track("Order Completed")

    with request_context(user_id="u-1", traits={"email": "ada@example.com"}):
        order.delay(False)
        order.delay(True)
    assert current_context() is None
    first, second = fake.events
    assert (first.profile.external_id, first.profile.email) == ("u-1", "ada@example.com")
    assert (second.profile.external_id, second.profile.email) == ("customer-7", None)


def start_worker(
    fake: FakeKlaviyo, folder: Path, *, flush_each_task: bool
) -> subprocess.Popen[str]:
    """Start a real prefork worker (one child process) on celery_site.py's app."""
    env = dict(
        os.environ,
        FAKE_URL=fake.url,
        CELERY_FOLDER=str(folder),
        FLUSH_EACH_TASK="1" if flush_each_task else "0",
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(HERE), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    )
    command = [
        sys.executable, "-m", "celery", "-A", "celery_site", "worker", "--pool=prefork",
        "--concurrency=1", "--without-heartbeat", "--without-mingle", "--without-gossip",
        "--loglevel=WARNING",
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop_worker(worker: subprocess.Popen[str]) -> str:
    """Stop the worker as a supervisor does (SIGTERM: warm shutdown) and return its output."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        output, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
    return output


def test_a_worker_task_gets_the_request_context_and_is_flushed_at_task_end(
    installed: tuple[Client, Installation], fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """A task enqueued in a request reaches Klaviyo with its identity and consent, at task end."""
    app = broker_app(tmp_path)
    worker = start_worker(fake, tmp_path, flush_each_task=True)
    try:
        with request_context(user_id="u-1", anonymous_id="anon-1", consent={"marketing": True}):
            app.send_task("site.order", args=[5])
            app.send_task("site.for_customer")
        app.send_task("site.order", args=[6])  # outside any request: no context, no identity
        # The worker's client waits 120 s to fill a job: only the task-end flush sends now.
        assert wait_for(lambda: len(fake.events) == 2), stop_worker(worker)
    finally:
        output = stop_worker(worker)
    by_customer = {event.profile.external_id: event for event in fake.events}
    assert set(by_customer) == {"u-1", "customer-7"}, output
    ours = by_customer["u-1"]
    assert ours.profile.anonymous_ids == ("anon-1",)
    assert ours.properties["consent"] == {"marketing": True}
    assert by_customer["customer-7"].properties["consent"] == {}  # explicit user_id: none of it
    assert "no profile identifier" in output  # the third task had nobody to track


def test_a_stopping_worker_sends_what_its_tasks_queued(
    installed: tuple[Client, Installation], fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """With flush_each_task=False, a warm shutdown still sends the queue before the child exits."""
    app = broker_app(tmp_path)
    worker = start_worker(fake, tmp_path, flush_each_task=False)
    try:
        with request_context(user_id="u-2"):
            result = app.send_task("site.order", args=[7])
        assert wait_for(lambda: not list(tmp_path.glob("*.msg"))), stop_worker(worker)
        time.sleep(0.5)  # the task itself runs after the message is taken
        assert fake.events == []  # queued in the child, waiting for flush_interval
    finally:
        output = stop_worker(worker)
    assert result.id
    assert wait_for(lambda: len(fake.events) == 1, timeout=10), output
    assert fake.events[0].profile.external_id == "u-2"


def test_install_checks_its_arguments(fake: FakeKlaviyo) -> None:
    """A non-Client or a non-positive flush_timeout raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match=r"client must be a klaviyo_signal\.Client"):
        install("client")  # type: ignore[arg-type]
    with (
        Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client,
        pytest.raises(ConfigurationError, match="flush_timeout must be a positive"),
    ):
        install(client, flush_timeout=0)
