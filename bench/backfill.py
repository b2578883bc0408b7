"""``klaviyo-signal send`` on backfill-sized files against the limited sink.

    python bench/backfill.py                 # 1,000,000 lines: ~17 minutes
    python bench/backfill.py --lines 100000 --mix-lines 20000  # a quick look

The sink runs at Klaviyo's own time scale by default (``--scale 1``: 2,500 events/s for
bulk jobs): one send process parses, checks and encodes every line itself, about 5,000
lines/s on two shared cores, so at ``--scale 2`` the CPU, not the limit, would bind.

Measures, each run in a fresh ``klaviyo-signal send --backfill`` process whose limiter is
scaled like the sink (``worker.scale_signal_limiter``):

- throughput of an events-only file, as a share of what the sink's limits allow for it
  (the README's whole-windows method for bulk event jobs);
- throughput of a mixed file (events and identifies), as a share of the least time the
  limits allow for its mix (each endpoint needs at least its own windows);
- peak RSS of the send process for a tenth of the file and for all of it (flat: the
  file is streamed);
- a run killed with SIGKILL once the sink holds half the events, then ``--resume``: the
  sink counts distinct ``unique_id``s, which must equal the file's lines (every line
  recorded exactly once, as Klaviyo dedupes), and how many were sent twice.

Prints one JSON object; the figures go into docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEYS = {"KLAVIYO_PUBLIC_API_KEY": "AbC123", "KLAVIYO_PRIVATE_API_KEY": "pk_bench_0123456789abcdef"}
EVENTS_PER_JOB = 1000
# The CLI in this process, with the limiter's windows scaled like the sink's.
_LAUNCH = (
    "import sys; sys.path.insert(0, {bench!r}); import worker; "
    "assert worker.scale_signal_limiter({scale!r}), 'no limiter knob to scale'; "
    "from klaviyo_signal._cli import main; sys.exit(main(sys.argv[1:]))"
)


def write_file(path: Path, lines: int, identify_every: int | None) -> dict[str, int]:
    """Orders of people 20 lines each; with ``identify_every``, an identify opens every
    that-many lines (the person's events follow it)."""
    counts = {"track": 0, "identify": 0}
    with path.open("w") as stream:
        for n in range(lines):
            person = n // 20
            if identify_every and n % identify_every == 0:
                person = n // identify_every
                line: dict[str, Any] = {
                    "type": "identify",
                    "userId": f"p-{person}",
                    "traits": {"email": f"p-{person}@example.com", "first_name": "Ann"},
                }
                counts["identify"] += 1
            else:
                if identify_every:
                    person = n // identify_every
                line = {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"p-{person}",
                    "timestamp": "2024-10-15T09:30:00Z",
                    "properties": {"order_id": f"o-{n}", "revenue": 42.5, "currency": "GBP"},
                }
                counts["track"] += 1
            stream.write(json.dumps(line, separators=(",", ":")) + "\n")
    return counts


class Sink:
    """bench/sink.py in limited mode, counting distinct unique_ids."""

    def __init__(self, scale: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "sink.py"),
                "--mode",
                "limited",
                "--scale",
                str(scale),
                "--count-unique",
                "--lifetime",
                "7200",
                "--max-requests",
                "100000000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().split()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=60) as answer:
            return dict(json.loads(answer.read()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{self.url}/_shutdown", data=b"", timeout=10).close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def send(
    sink: Sink, scale: float, *argv: str, kill_when: int | None = None, timeout: float
) -> dict[str, Any]:
    """Run one send process; with ``kill_when``, SIGKILL it once the sink holds that many
    distinct events. Returns its exit status, wall time, peak RSS and output tail."""
    env = {**os.environ, **KEYS, "KLAVIYO_BASE_URL": sink.url, "PYTHONPATH": str(ROOT)}
    code = _LAUNCH.format(bench=str(HERE), scale=scale)
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "send", "--backfill", *argv],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        killed = False
        deadline = start + timeout
        while True:
            # wait4, not poll(): it gives this child's own peak RSS.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                killed = True
            elif (
                not killed and kill_when is not None and sink.stats()["unique_events"] >= kill_when
            ):
                process.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.25)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": process.returncode,
            "killed": killed,
            "seconds": round(time.monotonic() - start, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stdout": out.read()[-2000:],
            "stderr": err.read()[-1000:],
        }


def allowed_seconds(requests: int, burst: int, steady: int, scale: float) -> float:
    """The least time ``requests`` requests take under fixed windows (the best phase)."""
    if requests <= 0:
        return 0.0
    short, long = 1.0 / scale, 60.0 / scale
    return max((math.ceil(requests / burst) - 1) * short, (math.ceil(requests / steady) - 1) * long)


def whole_windows(accepted: list[list[Any]], scale: float) -> dict[str, Any]:
    """The README's measure for bulk event jobs: events of the first 150*m accepted jobs
    over the time from the first acceptance to the job that opens the next window's worth."""
    jobs = [(t, n) for t, n, path in accepted if path == "/api/event-bulk-create-jobs"]
    m = (len(jobs) - 1) // 150
    if m < 1:
        return {"windows": 0}
    events = sum(n for _, n in jobs[: 150 * m])
    seconds = jobs[150 * m][0] - jobs[0][0]
    allowed = 150 * EVENTS_PER_JOB * scale / 60.0
    achieved = events / seconds
    return {
        "windows": m,
        "events_per_s": round(achieved),
        "allowed_per_s": round(allowed),
        "share": round(min(achieved / allowed, 1.0), 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = args.scale
    work = Path(tempfile.mkdtemp(prefix="backfill-"))
    results: dict[str, Any] = {"lines": args.lines, "scale": scale}
    events_file = work / "events.jsonl"
    tenth_file = work / "events-tenth.jsonl"
    mix_file = work / "mix.jsonl"
    write_file(events_file, args.lines, None)
    write_file(tenth_file, args.lines // 10, None)
    mix = write_file(mix_file, args.mix_lines, args.identify_every)
    per_event = 60.0 / (150 * EVENTS_PER_JOB * scale)
    # Each run may take 1.5x what the limits allow for the longer of the two files.
    budget = max(args.lines, args.mix_lines) * per_event * 1.5 + 120

    def measured(path: Path, label: str, *extra: str, kill_when: int | None = None) -> Any:
        sink = Sink(scale)
        try:
            outcome = send(sink, scale, "--file", str(path), *extra, kill_when=kill_when,
                           timeout=budget)  # fmt: skip
            outcome["sink"] = sink.stats()
        finally:
            sink.close()
        print(f"{label}: {outcome['seconds']} s, rc {outcome['returncode']}", file=sys.stderr)
        return outcome

    # 1. events only, 1/10 and all of the file: throughput and peak RSS.
    tenth = measured(tenth_file, "events, tenth")
    full = measured(events_file, "events, all")
    results["events"] = {
        "tenth_lines": args.lines // 10,
        "tenth_peak_rss_mb": tenth["peak_rss_mb"],
        "peak_rss_mb": full["peak_rss_mb"],
        "seconds": full["seconds"],
        "unique_events": full["sink"]["unique_events"],
        "throttled": full["sink"]["throttled"],
        "summary": full["stdout"].strip().splitlines()[:2],
        **whole_windows(full["sink"]["accepted"], scale),
    }

    # 2. the mix: events and identifies.
    mixed = measured(mix_file, "mix")
    stats = mixed["sink"]
    accepted = stats["accepted"]
    first = stats["first_request"]
    last = stats["last_accept"]
    identify_path = (
        "/api/profile-bulk-import-jobs"
        if stats["by_path"].get("/api/profile-bulk-import-jobs")
        else "/api/profile-import"
    )
    identify_requests = (
        math.ceil(mix["identify"] / 10_000)
        if identify_path == "/api/profile-bulk-import-jobs"
        else mix["identify"]
    )
    limits = {"/api/profile-import": (75, 700), "/api/profile-bulk-import-jobs": (10, 150)}
    allowed = max(
        allowed_seconds(math.ceil(mix["track"] / EVENTS_PER_JOB), 10, 150, scale),
        allowed_seconds(identify_requests, *limits[identify_path], scale),
    )
    achieved = last - first
    results["mix"] = {
        "lines": args.mix_lines,
        **mix,
        "identify_endpoint": identify_path,
        "seconds": mixed["seconds"],
        "first_to_last_accept_s": round(achieved, 2),
        "allowed_s": round(allowed, 2),
        "share": round(allowed / achieved, 3) if achieved > 0 else None,
        "peak_rss_mb": mixed["peak_rss_mb"],
        "throttled": stats["throttled"],
        "by_path": stats["by_path"],
        "unique_events": stats["unique_events"],
        "imported_profiles": stats["imported_profiles"],
        "accepted_requests": len(accepted),
        "summary": mixed["stdout"].strip().splitlines()[:2],
    }

    # 3. killed at half, then resumed: every line once at the sink.
    state = work / "state.json"
    sink = Sink(scale)
    try:
        env_args = ("--file", str(events_file), "--resume", str(state))
        first_run = send(sink, scale, *env_args, kill_when=args.lines // 2, timeout=budget)
        at_kill = sink.stats()
        second_run = send(sink, scale, *env_args, timeout=budget)
        after = sink.stats()
    finally:
        sink.close()
    saved = json.loads(state.read_text())
    results["kill_and_resume"] = {
        "killed": first_run["killed"],
        "first_returncode": first_run["returncode"],
        "first_seconds": first_run["seconds"],
        "unique_at_kill": at_kill["unique_events"],
        "second_returncode": second_run["returncode"],
        "second_seconds": second_run["seconds"],
        "second_summary": second_run["stdout"].strip().splitlines()[:2],
        "events_received": after["events"],
        "unique_events": after["unique_events"],
        "sent_twice": after["events"] - after["unique_events"],
        "every_line_once": after["unique_events"] == args.lines,
        "state_counts": saved["counts"],
    }
    return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--mix-lines", type=int, default=100_000)
    parser.add_argument(
        "--identify-every", type=int, default=100, help="mix: one identify per this many lines"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="the sink's time scale")
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
