"""`klaviyo-signal send` for backfills: --blueprint, --resume, --failed, signals, streaming."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal._cli import main
from klaviyo_signal._cli.checkpoint import Finished
from klaviyo_signal._cli.report import Outcomes, Progress
from klaviyo_signal.testing import FakeKlaviyo

ROOT = Path(__file__).parents[2]
KEYS = {"KLAVIYO_PUBLIC_API_KEY": "AbC123", "KLAVIYO_PRIVATE_API_KEY": "pk_test_0123456789abcdef"}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKlaviyo]:
    """A FakeKlaviyo that the environment's keys and base URL point at."""
    with FakeKlaviyo() as server:
        for name, value in {**KEYS, "KLAVIYO_BASE_URL": server.url}.items():
            monkeypatch.setenv(name, value)
        yield server


def orders(path: Path, count: int, *, start: int = 0) -> str:
    """Write ``count`` Order Completed lines without messageId (one person per 20 lines)."""
    with path.open("w") as stream:
        for n in range(start, start + count):
            line = {
                "type": "track",
                "event": "Order Completed",
                "userId": f"u-{n // 20}",
                "properties": {"order_id": f"o-{n}", "revenue": 9.5},
            }
            stream.write(json.dumps(line) + "\n")
    return str(path)


def order_ids(fake: FakeKlaviyo) -> list[str]:
    return [str(e.properties["order_id"]) for e in fake.events]


def spawn(fake: FakeKlaviyo, *argv: str) -> subprocess.Popen[str]:
    """Start `python -m klaviyo_signal send ...` as a real process against ``fake``."""
    env = {**os.environ, **KEYS, "KLAVIYO_BASE_URL": fake.url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "klaviyo_signal", "send", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_progress(state: Path, process: subprocess.Popen[str], total: int) -> dict[str, int]:
    """Poll the state file until it records some finished lines, but not all."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):
            data = None
        if data is not None and data["below"] > 1:
            assert data["below"] <= total, "the run finished before it could be stopped"
            return dict(data)
        time.sleep(0.02)
    raise AssertionError("no checkpoint with progress within 60 s")


# -- --blueprint ------------------------------------------------------------------------


def test_send_with_the_users_blueprint(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--blueprint maps the lines with the user's own file, as `blueprint validate` reads it."""
    blueprint = tmp_path / "klaviyo.json"
    blueprint.write_text(json.dumps({"rules": {"Signed Up": {"metric": "account_created"}}}))
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"type": "track", "event": "Signed Up", "userId": "u-1"}) + "\n")
    assert main(["send", "--file", str(lines), "--blueprint", str(blueprint)]) == 0
    assert "1 delivered" in capsys.readouterr().out
    assert [e.metric for e in fake.events] == ["account_created"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rules": {"X": {"metric": 12}}, "colour": 1}', "colour: unknown key"),
        ("{not json", "klaviyo.json"),
        (None, "No such file"),
    ],
)
def test_send_bad_blueprint_exits_2(
    fake: FakeKlaviyo,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str | None,
    message: str,
) -> None:
    """A blueprint file that is broken or missing stops send before anything is sent (exit 2)."""
    blueprint = tmp_path / "klaviyo.json"
    if content is not None:
        blueprint.write_text(content)
    lines = orders(tmp_path / "in.jsonl", 1)
    assert main(["send", "--file", lines, "--blueprint", str(blueprint)]) == 2
    err = capsys.readouterr().err
    assert "klaviyo-signal send: --blueprint:" in err
    assert message in err
    assert fake.requests == []


# -- message ids and --resume -----------------------------------------------------------


def test_rerun_of_the_same_file_is_duplicate_free(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Lines without messageId get the same ids in every run, so a rerun records nothing twice."""
    path = orders(tmp_path / "in.jsonl", 30)
    assert main(["send", "--file", path]) == 0
    assert main(["send", "--file", path]) == 0
    assert len(fake.events) == 30
    assert len({e.unique_id for e in fake.events}) == 30
    other = orders(tmp_path / "other.jsonl", 30, start=30)
    assert main(["send", "--file", other]) == 0
    assert len(fake.events) == 60  # another file's line 1 is another event


def test_resume_skips_what_a_finished_run_did(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A rerun with the same --resume state sends nothing the first run finished."""
    path = orders(tmp_path / "in.jsonl", 25)
    state = str(tmp_path / "state.json")
    assert main(["send", "--file", path, "--resume", state]) == 0
    capsys.readouterr()
    sent = len(fake.requests)
    assert main(["send", "--file", path, "--resume", state]) == 0
    out = capsys.readouterr().out
    assert "0 call(s)" in out
    assert "25 line(s) finished in an earlier run were skipped" in out
    assert "all runs: 25 delivered" in out
    assert len(fake.requests) == sent


def test_resume_refuses_another_input(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A state file written for one input is refused for other bytes (exit 2, nothing sent)."""
    state = str(tmp_path / "state.json")
    assert main(["send", "--file", orders(tmp_path / "a.jsonl", 3), "--resume", state]) == 0
    sent = len(fake.requests)
    other = orders(tmp_path / "b.jsonl", 4)
    assert main(["send", "--file", other, "--resume", state]) == 2
    err = capsys.readouterr().err
    assert "is the state of another input" in err
    assert "a.jsonl" in err
    assert len(fake.requests) == sent
    Path(state).write_text("{}")
    assert main(["send", "--file", other, "--resume", state]) == 2
    assert "not a send state file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--event", "A", "--resume", "s.json"], "--resume and --failed go with --file only"),
        (["--file", "-", "--resume", "s.json"], "--resume needs a file"),
    ],
)
def test_resume_usage_errors(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """--resume without a file to fingerprint is a usage error (exit 2)."""
    assert main(["send", *argv]) == 2
    assert message in capsys.readouterr().err


def test_resume_after_sigkill_records_every_line_once(tmp_path: Path) -> None:
    """A run killed with SIGKILL midway, rerun with --resume, records every line exactly once."""
    total = 6000
    path = orders(tmp_path / "in.jsonl", total)
    state = tmp_path / "state.json"
    # Each request (a job of 1000 events) takes 0.3 s: long enough to kill the run midway.
    with FakeKlaviyo(latency=0.3) as fake:
        first = spawn(fake, "--file", path, "--resume", str(state))
        try:
            progress = wait_for_progress(state, first, total)
        finally:
            first.kill()
            first.communicate()
        assert first.returncode == -signal.SIGKILL
        before = len(fake.events)
        assert 0 < before < total
        second = spawn(fake, "--file", path, "--resume", str(state))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        skipped = re.search(r"(\d+) line\(s\) finished in an earlier run were skipped", out)
        assert skipped is not None, out
        assert int(skipped[1]) >= progress["below"] - 1
        ids = order_ids(fake)
    assert len(ids) == total
    assert sorted(ids) == sorted(f"o-{n}" for n in range(total))


def test_sigint_writes_the_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops the run with exit 130 and a checkpoint a resumed run finishes from."""
    total = 2000
    path = orders(tmp_path / "in.jsonl", total)
    state = tmp_path / "state.json"
    # --sync sends one line at a time, 0.02 s each: the first run cannot finish on its own.
    with FakeKlaviyo(latency=0.02) as fake:
        first = spawn(fake, "--file", path, "--resume", str(state), "--sync")
        wait_for_progress(state, first, total)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 130, err
        assert "interrupted" in err
        assert f"resume with: --resume {state}" in err
        saved = json.loads(state.read_text())
        assert saved["runs"] == []
        assert 1 < saved["below"] <= total
        assert saved["counts"]["delivered"] == saved["below"] - 1 == len(fake.events)
        assert f"{saved['below'] - 1} call(s): {saved['below'] - 1} delivered" in out
        second = spawn(fake, "--file", path, "--resume", str(state))  # background mode
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert f"all runs: {total} delivered" in out
        ids = order_ids(fake)
    assert sorted(ids) == sorted(f"o-{n}" for n in range(total))


def test_sigterm_leaves_unsent_lines_for_the_resumed_run(tmp_path: Path) -> None:
    """SIGTERM in background mode exits 143; lines the client could not send stay unfinished."""
    path = orders(tmp_path / "in.jsonl", 3000)
    state = tmp_path / "state.json"
    # One bulk job a minute: the first is accepted, the next two wait on a long Retry-After.
    limits = {"POST /api/event-bulk-create-jobs": (1, 1)}
    with FakeKlaviyo(rate_limits=limits) as fake:
        run = spawn(fake, "--file", path, "--resume", str(state))
        wait_for_progress(state, run, 3000)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 143, err
        assert len(fake.events) == 1000
    saved = json.loads(state.read_text())
    assert saved["below"] == 1001
    assert saved["runs"] == []
    assert saved["counts"] == {"delivered": 1000, "dropped": 0, "failed": 0, "invalid": 0}
    assert "1000 call(s): 1000 delivered, 0 dropped, 0 failed, 0 invalid" in out


# -- --failed ---------------------------------------------------------------------------


def test_failed_report_round_trips(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--failed lists each failed and invalid line with its reason; sent again, it delivers."""
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"type": "track", "event": "Order Completed", "userId": "u-1",
                    "properties": {"order_id": "o-1", "revenue": 19.90}}).replace("19.9", "19.90")
        + "\n"
        + json.dumps({"type": "track", "event": "Order Completed", "userId": "u-2",
                      "messageId": "m-2", "properties": {"order_id": "o-2"}})
        + "\n\nnot json\n"
    )  # fmt: skip
    report = tmp_path / "failed.jsonl"
    fake.fail_next(400)  # the bulk job holding both events
    assert main(["send", "--file", str(path), "--failed", str(report)]) == 1
    assert "0 delivered, 0 dropped, 2 failed, 1 invalid" in capsys.readouterr().out
    records = [json.loads(line) for line in report.read_text().splitlines()]
    failures = {r["_failed"]["line"]: r["_failed"] for r in records}
    assert failures[1]["outcome"] == failures[2]["outcome"] == "failed"
    assert "Klaviyo answered HTTP 400" in failures[1]["reason"]
    assert failures[4] == {
        "line": 4,
        "outcome": "invalid",
        "reason": "not JSON: Expecting value: line 1 column 1 (char 0)",
        "text": "not json",
    }
    assert '"revenue":19.90' in report.read_text()  # the line's own number, exactly
    first = next(r for r in records if r["_failed"]["line"] == 1)
    assert first["messageId"]  # the id the call was sent with, so a retry dedupes

    assert main(["send", "--file", str(report), "--failed", str(tmp_path / "again.jsonl")]) == 1
    assert "2 delivered, 0 dropped, 0 failed, 1 invalid" in capsys.readouterr().out
    assert sorted(e.unique_id for e in fake.events) == sorted([first["messageId"], "m-2"])
    [still] = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert still["_failed"]["text"] == "not json"
    assert still["_failed"]["reason"].startswith("not JSON")


# -- what send reads --------------------------------------------------------------------


def test_subscribe_lines_go_through_the_bulk_subscription_job(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """subscribe and unsubscribe lines are sent as the Client's calls, in bulk jobs."""
    path = tmp_path / "in.jsonl"
    lines = [
        {"type": "subscribe", "email": "ann@example.com", "listId": "L1"},
        {"type": "subscribe", "email": "bob@example.com", "listId": "L1"},
        {"type": "unsubscribe", "email": "cy@example.com"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["send", "--file", str(path)]) == 0
    assert "3 delivered" in capsys.readouterr().out
    jobs = [r for r in fake.requests if r.path.endswith("-bulk-create-jobs")]
    subscribe = [r for r in jobs if "subscription-bulk-create" in r.path]
    assert len(subscribe) == 1  # both subscriptions of L1 in one job


def test_non_terminal_progress_is_plain_lines() -> None:
    """Without a terminal, progress comes as plain lines with the rate and the time left."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, 100, bar=False, delay=1.0, clock=lambda: now[0])
    outcomes = Outcomes()
    for second in range(1, 21):
        now[0] = float(second)
        for _ in range(2):
            outcomes.add("delivered")
        progress.update(outcomes)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "progress: 20/100 lines (20%), 2/s, ETA 40s; 20 delivered, 0 dropped, 0 failed, 0 invalid",
        "progress: 40/100 lines (40%), 2/s, ETA 30s; 40 delivered, 0 dropped, 0 failed, 0 invalid",
    ]


@given(st.permutations(range(1, 60)))
def test_finished_lines_in_any_order(order: list[int]) -> None:
    """However lines finish, the state holds exactly the finished ones, in few runs."""
    finished = Finished()
    done: set[int] = set()
    for number in order:
        finished.add(number)
        done.add(number)
        skip = finished.skipper()
        assert {n for n in range(1, 61) if skip(n)} == done
        runs = finished.runs()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(runs))
    assert finished.below == 60
    assert finished.runs() == []
