"""Background identify throughput: bulk profile import against a sink enforcing Klaviyo's limits.

    python bench/identify.py                # both runs, ~1.5 minutes on 2 cores
    python bench/identify.py --only limits  # or --only full

Run from a checkout with klaviyo-signal importable (``pip install -e .``). Two runs, each
against its own ``bench/sink.py --mode limited`` process:

- **limits**: does the client reach the limits, without a 429? At Klaviyo's job size
  (10,000 profiles) the limits allow 25,000 profiles/s, far above what one Python process
  produces, so the limit would never bind. As ``bench/run.py`` does for events, the run
  shrinks what binds until the CPU does not: jobs of ``--job`` profiles (default 100) and
  windows ``--scale`` times shorter (default 2: 0.5 s and 30 s, in the sink and in the
  client's limiter alike), so the limits allow 150 x job per steady window (500
  profiles/s). The producer offers 1.5x that; achieved = profiles of the first 150 x
  ``--windows`` accepted jobs over the time from the first acceptance to the one after
  them (as bench/README.md explains for events), as a share of the allowed rate.
- **full**: Klaviyo's real job size and limits, identifies as fast as the process makes
  them: profiles per second from the first call until every call is delivered (polled
  as imported), beside profile-import's 12.5/s (750 per minute, its steady limit).

Prints one JSON line per run (``RESULT {...}``) and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SINK = HERE / "sink.py"
PUBLIC_KEY = "AbC123"
PRIVATE_KEY = "pk_bench_0123456789abcdef"
PROFILE_JOBS = "/api/profile-bulk-import-jobs"
STEADY_JOBS = 150  # jobs per steady window, Klaviyo's published limit
PROFILE_IMPORT_PER_S = 750 / 60  # profile-import's steady limit: today's route
OFFER = 1.5  # the limits run offers this multiple of the allowed rate
PACE_EVERY = 100


def start_sink(scale: float, lifetime: float) -> tuple[subprocess.Popen[str], str]:
    """Start the limited sink; return the process and its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SINK),
            "--mode",
            "limited",
            "--scale",
            str(scale),
            "--lifetime",
            str(lifetime),
            "--max-requests",
            "10000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"sink did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def sink_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_stats", timeout=30) as answer:
        return json.load(answer)  # type: ignore[no-any-return]


def stop_sink(proc: subprocess.Popen[str], url: str) -> None:
    with contextlib.suppress(OSError):
        urllib.request.urlopen(url + "/_shutdown", data=b"", timeout=5).close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_client(url: str) -> Any:
    from klaviyo_signal import Client

    return Client(
        PUBLIC_KEY,
        PRIVATE_KEY,
        base_url=url,
        max_queue_size=2_000_000,
        max_queue_bytes=4 << 30,
        shutdown_timeout=5.0,
    )


def identify_all(client: Any, n: int, rate: float | None) -> float:
    """Make ``n`` identifies, paced at ``rate`` per second (None: flat out); return the start."""
    start = time.monotonic()
    for i in range(n):
        client.identify(f"user-{i}", {"email": f"user{i}@example.com", "first_name": "Ann"})
        if rate is not None and i % PACE_EVERY == 0:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return start


def limits_run(scale: float, windows: int, job: int) -> dict[str, Any]:
    """Offer 1.5x the allowed rate with jobs of ``job`` profiles; return the share reached."""
    from klaviyo_signal._delivery import profile_jobs

    import worker  # bench/worker.py: the limiter's windows, scaled like the sink's

    if not worker.scale_signal_limiter(scale):
        raise RuntimeError("klaviyo-signal's limiter has no window knob to scale")
    profile_jobs.MAX_IMPORT_PROFILES = job
    profile_jobs.FIRST_POLL = 0.5 / scale
    window = 60.0 / scale
    allowed = STEADY_JOBS * job / window
    n = (STEADY_JOBS * windows + 1) * job
    proc, url = start_sink(scale, lifetime=window * (windows + 4) + 60)
    try:
        client = make_client(url)
        identify_all(client, n, allowed * OFFER)
        delivered = client.flush(timeout=window * (windows + 3))
        client.close()
        stats = sink_stats(url)
    finally:
        stop_sink(proc, url)
    accepted = sorted((t, count) for t, count, path in stats["accepted"] if path == PROFILE_JOBS)
    cut = STEADY_JOBS * windows
    profiles = sum(count for _, count in accepted[:cut])
    achieved = profiles / (accepted[cut][0] - accepted[0][0])
    return {
        "run": "limits",
        "scale": scale,
        "job_profiles": job,
        "windows": windows,
        "identifies": n,
        "all_delivered": delivered and client.stats.delivered == n,
        "jobs": len(accepted),
        "throttled_429": stats["throttled"],
        "allowed_per_s": allowed,
        "achieved_per_s": achieved,
        "share": min(achieved / allowed, 1.0),
        "polls": stats["by_path"].get(PROFILE_JOBS + "/{id}", 0),
    }


def full_run(n: int) -> dict[str, Any]:
    """Identifies flat out at Klaviyo's job size and limits; return profiles/s delivered."""
    proc, url = start_sink(1.0, lifetime=600)
    try:
        client = make_client(url)
        start = identify_all(client, n, None)
        made = time.monotonic() - start
        delivered = client.flush(timeout=300)
        took = time.monotonic() - start
        client.close()
        stats = sink_stats(url)
    finally:
        stop_sink(proc, url)
    rate = n / took
    return {
        "run": "full",
        "identifies": n,
        "all_delivered": delivered and client.stats.delivered == n,
        "jobs": stats["by_path"].get(PROFILE_JOBS, 0),
        "throttled_429": stats["throttled"],
        "calls_per_s": n / made,
        "delivered_per_s": rate,
        "profile_import_per_s": PROFILE_IMPORT_PER_S,
        "ratio_to_profile_import": rate / PROFILE_IMPORT_PER_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["limits", "full"])
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--job", type=int, default=100)
    parser.add_argument("--full", type=int, default=50_000, help="identifies in the full run")
    args = parser.parse_args()
    results = []
    if args.only in (None, "full"):
        results.append(full_run(args.full))
    if args.only in (None, "limits"):
        results.append(limits_run(args.scale, args.windows, args.job))
    for result in results:
        print("RESULT " + json.dumps(result), flush=True)
    for r in results:
        if r["run"] == "limits":
            print(
                f"limits: {r['achieved_per_s']:.0f} of {r['allowed_per_s']:.0f} profiles/s "
                f"allowed ({r['share']:.1%}), {r['throttled_429']} 429s, "
                f"all delivered: {r['all_delivered']}"
            )
        else:
            print(
                f"full: {r['delivered_per_s']:.0f} profiles/s delivered "
                f"({r['ratio_to_profile_import']:.0f}x profile-import's "
                f"{r['profile_import_per_s']:.1f}/s), {r['jobs']} jobs, "
                f"{r['throttled_429']} 429s, all delivered: {r['all_delivered']}"
            )


if __name__ == "__main__":
    main()
