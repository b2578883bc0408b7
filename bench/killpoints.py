"""The durable outbox under kill -9, and what it costs the caller.

``python bench/killpoints.py`` (in ``bench/.venv``, which ``python bench/run.py --help``
creates: Segment's library is needed for the cost comparison).

Kill points: a subprocess builds ``Client(outbox=...)`` and queues 50,000 ``track()`` calls
(the benchmark's ``Order Completed`` event) against a local sink while its worker sends,
and appends the message id of every call that returned ``queued`` to a file (one
``write()`` each, which survives the kill). It is SIGKILLed at a random moment; a second
process then opens the same outbox, sends what is left and closes. The sink records every
event's ``unique_id`` (Klaviyo keeps one event per unique_id: a repeat is sent again but
not recorded again). Each row of the table is one kill point.

Caller cost: ``perf_counter_ns`` around each ``track()`` in background mode, for
klaviyo-signal in memory, klaviyo-signal with the outbox, and Segment's in-memory
``track()``, each in a fresh process against ``bench/sink.py``, interleaved per repetition,
after 50 warm-up calls and a full collection (as ``bench/worker.py``'s ``cost``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a producer killed mid-request resets its connection: expected here


class Sink:
    """A Klaviyo-like sink on 127.0.0.1 that counts every event's unique_id."""

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.requests = 0
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ids = []
                if self.path.startswith("/api/event-bulk-create-jobs"):
                    items = body["data"]["attributes"]["events-bulk-create"]["data"]
                    for item in items:
                        for event in item["attributes"]["events"]["data"]:
                            ids.append(event["attributes"]["unique_id"])
                with lock:
                    sink.requests += 1
                    sink.received.update(ids)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_OPTIONS = "max_queue_size=60_000, max_queue_bytes=4 << 30, rate_limits=None, shutdown_timeout=30"

PRODUCER = textwrap.dedent(
    """
    import os, sys
    import libs
    from klaviyo_signal import Client
    url, outbox, ids, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = Client(libs.PUBLIC_KEY, libs.PRIVATE_KEY, base_url=url, outbox=outbox, {options})
    out = os.open(ids, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    print("ready", flush=True)
    for i in range(count):
        user_id, email, properties = libs.order(i)
        d = client.track("Order Completed", properties, traits={{"email": email}}, user_id=user_id)
        if d.status.value == "queued":
            os.write(out, (d.message_id + "\\n").encode())
    client.flush(120)
    print("finished", flush=True)
    """
).format(options=_OPTIONS)

RESTART = textwrap.dedent(
    """
    import json, sys
    import libs
    from klaviyo_signal import Client
    url, outbox = sys.argv[1], sys.argv[2]
    client = Client(libs.PUBLIC_KEY, libs.PRIVATE_KEY, base_url=url, outbox=outbox, {options})
    left = client.stats.queued
    ok = client.flush(300)
    client.close()
    print(json.dumps({{"replayed": left, "flushed": ok, "delivered": client.stats.delivered}}))
    """
).format(options=_OPTIONS)


def kill_point(sink: Sink, workdir: Path, index: int, count: int, at: float) -> dict[str, Any]:
    """Queue ``count`` calls in a subprocess, SIGKILL it ``at`` s after its Client is built,
    restart; return the row of the table."""
    outbox = workdir / f"outbox-{index}.db"
    ids = workdir / f"queued-{index}.txt"
    before = collections.Counter(sink.received)
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, sink.url, str(outbox), str(ids), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert producer.stdout is not None
    assert producer.stdout.readline().strip() == "ready"
    time.sleep(at)
    finished = producer.poll() is not None
    producer.send_signal(signal.SIGKILL)
    producer.wait(30)
    producer.stdout.close()
    text = ids.read_text() if ids.exists() else ""
    queued = [line for line in text.split("\n")[:-1] if line]  # complete lines only
    with sqlite3.connect(outbox) as connection:
        left = connection.execute("SELECT count(*) FROM calls").fetchone()[0]
    restart = subprocess.run(
        [sys.executable, "-c", RESTART, sink.url, str(outbox)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=True,
    )
    replay = json.loads(restart.stdout.strip().splitlines()[-1])
    with sqlite3.connect(outbox) as connection:
        after = connection.execute("SELECT count(*) FROM calls").fetchone()[0]
    received = sink.received - before  # this kill point's events only (ids are unique)
    recorded = set(received)
    mine = set(queued)
    return {
        "kill_at_s": at,
        "finished_before_kill": finished,
        "queued": len(queued),
        "rows_at_kill": left,
        "replayed": replay["replayed"],
        "recorded": len(mine & recorded),
        "lost": len(mine - recorded),
        "recorded_twice": 0,  # the sink keeps one event per unique_id, as Klaviyo does
        "sent_twice": sum(n - 1 for n in received.values() if n > 1),
        "not_returned": len(recorded - mine),
        "rows_after": after,
    }


COST = textwrap.dedent(
    """
    import gc, json, os, sys, time
    import libs, worker
    kind, url, n, outbox = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if kind == "segment":
        client = libs.make_segment(url, queue=n + 1000)
        call = lambda i: libs.segment_track(client, i)
    else:
        from klaviyo_signal import Client
        extra = {"outbox": outbox} if kind == "outbox" else {}
        client = Client(libs.PUBLIC_KEY, libs.PRIVATE_KEY, base_url=url, max_queue_size=n + 1000,
                        max_queue_bytes=4 << 30, timeout=60.0, shutdown_timeout=1.0, **extra)
        call = lambda i: libs.signal_track(client, i)
    for i in range(50):
        call(i)
    time.sleep(0.2)
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        call(i)
        samples.append(clock() - start)
    print("RESULT " + json.dumps(worker.percentiles(samples)), flush=True)
    os._exit(0)
    """
)


def cost(kind: str, n: int, workdir: Path, rep: int) -> dict[str, float]:
    """One caller-cost measurement in a fresh process against a fresh ``bench/sink.py``."""
    mode = "segment" if kind == "segment" else "klaviyo"
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--mode", mode, "--lifetime", "300"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        url = f"http://127.0.0.1:{int(sink.stdout.readline().split()[1])}"
        outbox = workdir / f"cost-{kind}-{rep}.db"
        run = subprocess.run(
            [sys.executable, "-c", COST, kind, url, str(n), str(outbox)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            check=False,
        )
        lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"{kind}: no result\n{run.stderr}")
        result: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
        return result
    finally:
        sink.terminate()
        sink.wait(10)


def _median(values: list[float]) -> str:
    m = statistics.median(values)
    if len(values) > 1 and min(values) != max(values):
        return f"{m:.1f} ({min(values):.1f}–{max(values):.1f})"
    return f"{m:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=50_000, help="calls per producer")
    p.add_argument("--kills", type=int, default=6, help="kill points (>= 5)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--cost-calls", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=3, help="caller-cost repetitions")
    p.add_argument("--only", choices=("kills", "cost"), help="run one part")
    args = p.parse_args()
    rng = random.Random(args.seed)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="killpoints-") as tmp:
        workdir = Path(tmp)
        if args.only != "cost":
            sink = Sink()
            try:
                rows = []
                for index in range(args.kills):
                    # Spread over the producer's queueing (a few seconds for 50,000 calls).
                    at = round(rng.uniform(0.05, 5.0 * args.calls / 50_000), 3)
                    row = kill_point(sink, workdir, index, args.calls, at)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                sink.close()
            print()
            print(
                "| kill at | returned `queued` | left in the outbox | recorded | lost "
                "| recorded twice | sent again (deduplicated) | not returned, recorded |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for row in rows:
                print(
                    f"| {row['kill_at_s']:.2f} s | {row['queued']:,} | {row['rows_at_kill']:,} "
                    f"| {row['recorded']:,} | {row['lost']} | {row['recorded_twice']} "
                    f"| {row['sent_twice']:,} | {row['not_returned']} |"
                )
            print()
        if args.only != "kills":
            samples: dict[str, list[dict[str, float]]] = {"memory": [], "outbox": [], "segment": []}
            for rep in range(args.reps):
                for kind, runs in samples.items():
                    runs.append(cost(kind, args.cost_calls, workdir, rep))
                    print(kind, json.dumps(runs[-1]), flush=True)
            print()
            print("| track() caller cost | median µs | p99 µs | worst µs |")
            print("|---|---:|---:|---:|")
            labels = {
                "memory": "klaviyo-signal, in memory",
                "outbox": "klaviyo-signal, `outbox=`",
                "segment": "Segment, in memory",
            }
            for kind, runs in samples.items():
                print(
                    f"| {labels[kind]} | {_median([r['median_us'] for r in runs])} "
                    f"| {_median([r['p99_us'] for r in runs])} "
                    f"| {_median([r['max_us'] for r in runs])} |"
                )
            med = {k: statistics.median(r["median_us"] for r in v) for k, v in samples.items()}
            print()
            print(f"outbox / in memory: {med['outbox'] / med['memory']:.2f}x (target <= 4x)")
            print(f"outbox / Segment: {med['outbox'] / med['segment']:.2f} (target < 1)")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
