"""klaviyo-signal next to Segment, PostHog, RudderStack and Klaviyo's own SDK, on this machine.

    python bench/run.py            # the full run (~5 minutes on 2 cores)
    python bench/run.py --quick    # ~1 minute, smaller counts, one repetition
    python bench/run.py --profile  # where klaviyo-signal's caller time goes (cProfile)

The first run creates ``bench/.venv`` and installs this checkout (editable) with the
``bench`` extra (the peers, matplotlib, psutil) into it, then re-runs itself there; later
runs reuse it (``--no-venv`` runs in the current interpreter instead). Every measurement
is its own worker process against its own sink process on 127.0.0.1 (``bench/sink.py``);
libraries are interleaved repetition by repetition. Results go to ``docs/assets/bench.md``,
``docs/assets/bench.png``, ``docs/assets/bench.json`` and the results section of
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
ASSETS = ROOT / "docs" / "assets"
PAGE = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
BULK_JOB_EVENTS = 1000
BULK_PATH = "/api/event-bulk-create-jobs"
BULK_BURST, BULK_STEADY = 10, 150  # Klaviyo's bulk limits: jobs per 1 s and per 60 s window
# The limits producer offers this multiple of the allowed rate, so the limit binds.
LIMITS_OFFER = 1.5

# -- the venv ----------------------------------------------------------------------------


def _bench_extra_hash() -> str:
    lines = [
        line
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith("bench =")
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def ensure_venv(argv: list[str]) -> None:
    """Create/refresh bench/.venv with ``.[bench]`` and re-exec this script inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / ".bench-extra"
    wanted = _bench_extra_hash()
    if not python.exists():
        print(f"bench: creating {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(
            "bench: installing this checkout with the [bench] extra (peers, matplotlib)", flush=True
        )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-e",
                f"{ROOT}[bench]",
            ],
            check=True,
        )
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


# -- running one measurement -------------------------------------------------------------


def run_one(
    scenario: str,
    lib: str,
    sink_mode: str,
    spec: dict[str, Any],
    *,
    hard_timeout: float,
    max_requests: int,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Start a sink, run one worker process against it, return the worker's and sink's view."""
    sink = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "sink.py"),
            "--mode",
            sink_mode,
            "--scale",
            str(scale),
            "--max-requests",
            str(max_requests),
            "--lifetime",
            str(hard_timeout + 15),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}"
        full = {"scenario": scenario, "lib": lib, "url": url, **spec}
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / "worker.py"), json.dumps(full)],
                capture_output=True,
                text=True,
                timeout=hard_timeout,
                check=False,
            )
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if lines:
                result = json.loads(lines[-1][len("RESULT ") :])
            else:
                result = {
                    "ok": False,
                    "error": f"worker exited {proc.returncode}: {proc.stderr.strip()[-800:]}",
                }
        except subprocess.TimeoutExpired:
            result = {"ok": False, "error": f"worker exceeded {hard_timeout:.0f} s"}
        with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
            result["sink"] = json.loads(response.read())
        with contextlib.suppress(OSError):
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/_shutdown", method="POST"), timeout=5
            ).close()
    finally:
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
    if not result.get("ok"):
        print(f"  ! {scenario} / {lib}: {result.get('error')}", flush=True)
        if result.get("trace"):
            print(result["trace"], flush=True)
    return result


# -- the plan ----------------------------------------------------------------------------

SIZES = {
    # full: ~5 min on 2 cores; quick: ~1 min
    "full": {
        "reps": 3,
        "cost": 20_000,
        "throughput": 20_000,
        "single": 2_000,
        "deadline": 8.0,
        "memory": 100_000,
        "memory_reps": 1,
        # limits: klaviyo-signal measured over this many whole steady windows; the other
        # rows over one (or until their deadline); Klaviyo's SDK create_event: a sample
        "limits_windows": 2,
        "limits_reps": 1,
        "limits_libs": ["klaviyo-signal", "klaviyo-signal (no limits)", "klaviyo-api bulk"],
        "limits_single": 3_000,
        "limits_single_deadline": 8.0,
        "sync": 1_000,
    },
    "quick": {
        "reps": 1,
        "cost": 5_000,
        "throughput": 5_000,
        "single": 500,
        "deadline": 5.0,
        "memory": 30_000,
        "memory_reps": 1,
        "limits_windows": 1,
        "limits_reps": 1,
        "limits_libs": ["klaviyo-signal"],
        "limits_single": 1_500,
        "limits_single_deadline": 4.0,
        "sync": 300,
    },
}
BACKGROUND = ["klaviyo-signal", "segment", "posthog", "rudder"]
SINK_OF = {
    "klaviyo-signal": "klaviyo",
    "klaviyo-signal (no limits)": "klaviyo",
    "segment": "segment",
    "posthog": "posthog",
    "rudder": "rudder",
    "klaviyo-api": "klaviyo",
    "klaviyo-api bulk": "klaviyo",
    "klaviyo-signal sync": "klaviyo",
    "requests": "klaviyo",
}


def limits_spec(size: dict[str, Any], lib: str, scale: float) -> dict[str, Any]:
    """Events, deadline and offered rate of one limits run at time scale ``scale``."""
    window = 60.0 / scale
    if lib == "klaviyo-api":
        return {"n": size["limits_single"], "deadline": size["limits_single_deadline"]}
    # klaviyo-signal with and without its limiter: the same offer over the same windows.
    # Klaviyo's SDK bulk call: one window's worth, cut at 0.8 window (its CPU, not the
    # limit, bounds it: see its end-to-end events/s).
    windows = size["limits_windows"] if lib.startswith("klaviyo-signal") else 1
    # One job more than `windows` steady windows hold: its acceptance closes the last one.
    n = (windows * BULK_STEADY + 1) * BULK_JOB_EVENTS
    allowed = BULK_STEADY * BULK_JOB_EVENTS / window
    deadline = windows * window * 1.2 + 10.0 if lib.startswith("klaviyo-signal") else window * 0.8
    return {
        "n": n,
        "deadline": deadline,
        "rate": allowed * LIMITS_OFFER,
        "windows": windows,
    }


def plan(
    size: dict[str, Any], has_limits_kwarg: bool, scale: float = 2.0
) -> list[list[tuple[str, str, dict[str, Any]]]]:
    """Return one list of (scenario, lib, spec) per repetition, libraries interleaved."""
    signal_tp = ["klaviyo-signal"] + (["klaviyo-signal (no limits)"] if has_limits_kwarg else [])
    reps = []
    for rep in range(size["reps"]):
        runs: list[tuple[str, str, dict[str, Any]]] = []

        def rotated(names: list[str], rep: int = rep) -> list[str]:
            k = rep % len(names)
            return names[k:] + names[:k]

        for lib in rotated(BACKGROUND):
            runs.append(("cost", lib, {"n": size["cost"]}))
        for lib in rotated(
            [*signal_tp, "segment", "posthog", "rudder", "klaviyo-api", "klaviyo-api bulk"]
        ):
            n = size["single"] if lib == "klaviyo-api" else size["throughput"]
            runs.append(("throughput", lib, {"n": n, "deadline": size["deadline"]}))
        if rep < size["memory_reps"]:
            for lib in rotated(BACKGROUND):
                runs.append(("memory", lib, {"n": size["memory"]}))
        if rep < size["limits_reps"]:
            limited = [
                lib
                for lib in size["limits_libs"]
                if lib != "klaviyo-signal (no limits)" or has_limits_kwarg
            ]
            for lib in rotated([*limited, "klaviyo-api"]):
                runs.append(("limits", lib, limits_spec(size, lib, scale)))
        for lib in rotated(["klaviyo-signal sync", "klaviyo-api", "requests"]):
            runs.append(("sync", lib, {"n": size["sync"]}))
        reps.append(runs)
    return reps


def execute(scenario: str, lib: str, spec: dict[str, Any], scale: float) -> dict[str, Any]:
    if scenario == "memory":
        return run_one(scenario, lib, "hold", spec, hard_timeout=90, max_requests=1000)
    if scenario == "limits":
        spec = {**spec, "scale": scale}
        return run_one(
            scenario,
            lib,
            "limited",
            spec,
            hard_timeout=spec["deadline"] + 40,
            max_requests=spec["n"] * 4 + 10_000,
            scale=scale,
        )
    deadline = spec.get("deadline", 30.0)
    return run_one(
        scenario,
        lib,
        SINK_OF[lib],
        spec,
        hard_timeout=deadline + 60,
        max_requests=spec["n"] * 3 + 1000,
    )


# -- analysis ----------------------------------------------------------------------------


def limits_metrics(result: dict[str, Any]) -> dict[str, float]:
    """429s, and the sustained accepted rate as a share of the rate the limits allow.

    Allowed: Klaviyo's fixed steady windows admit 150 jobs of 1,000 events each per window
    (60 s / scale); over a run of T seconds that is at most 150 x 1,000 x (whole windows in
    T + 1), which tends to 150,000 per window as T grows; that long-run rate is "allowed"
    (the burst window admits 10 per 1 s / scale, 600 per steady window, so the steady
    window binds).

    Achieved: over whole steady windows' worth of jobs. With the bulk jobs the sink accepted
    at t_0 < t_1 < ..., and m = (jobs - 1) // 150 ≥ 1, it is the events of the first 150·m
    jobs divided by t_150m - t_0, the time until the sink accepted the job that opens the
    next window's worth. A client that cannot see the window edges (and so keeps at most
    150 jobs in any window-long span) needs t_150m - t_0 ≥ m windows; that is 100%.
    Counting whole windows' worth of jobs keeps the start-up burst (a fresh client's first
    150 jobs) from passing as sustained throughput, and the window edges out of the result.
    With fewer than 151 jobs the steady limit never bound: the events before the last
    accepted request over the time to it (``windows`` = 0 says so).
    """
    sink = result["sink"]
    accepted = sorted(tuple(a) for a in sink["accepted"])
    window = 60.0 / sink["scale"]
    allowed = BULK_STEADY * BULK_JOB_EVENTS / window
    out = {
        "throttled": float(sink["throttled"]),
        "delivered": float(sum(a[1] for a in accepted)),
        "allowed_per_s": allowed,
        "windows": 0.0,
        "complete": float(bool(result.get("complete"))),
    }
    jobs = [a for a in accepted if a[2] == BULK_PATH]
    if len(jobs) > BULK_STEADY:
        m = (len(jobs) - 1) // BULK_STEADY
        events = sum(a[1] for a in jobs[: m * BULK_STEADY])
        span = jobs[m * BULK_STEADY][0] - jobs[0][0]
        out["windows"] = float(m)
    elif len(accepted) >= 2:
        events = sum(a[1] for a in accepted[:-1])
        span = accepted[-1][0] - accepted[0][0]
    else:
        return {**out, "share": 0.0, "events_per_s": 0.0}
    rate = events / max(span, 1e-3)
    out["events_per_s"] = rate
    out["share"] = min(rate / allowed, 1.0)
    return out


def metrics_of(scenario: str, result: dict[str, Any]) -> dict[str, float]:
    if not result.get("ok"):
        return {}
    sink = result["sink"]
    if scenario == "cost":
        return {k: result[k] for k in ("median_us", "p99_us", "max_us")}
    if scenario == "throughput":
        delivered = max(result["delivered"], 1)
        return {
            "events_per_s": result["events_per_s"],
            "cpu_us_per_event": result["cpu_us_per_event"],
            "requests_per_10k": sink["requests"] / delivered * 10_000,
            "complete": float(result["complete"]),
        }
    if scenario == "memory":
        return {"bytes_per_event": result["bytes_per_event"]}
    if scenario == "limits":
        return limits_metrics(result)
    if scenario == "sync":
        return {k: result[k] for k in ("median_us", "p99_us", "calls_per_s", "cpu_us_per_call")}
    return {}


def summarize(raw: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """scenario -> lib -> metric -> {median, min, max, n}."""
    grouped: dict[str, dict[str, dict[str, list[float]]]] = {}
    for entry in raw:
        for metric, value in entry["metrics"].items():
            grouped.setdefault(entry["scenario"], {}).setdefault(entry["lib"], {}).setdefault(
                metric, []
            ).append(value)
    return {
        scenario: {
            lib: {
                metric: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
                for metric, v in metrics.items()
            }
            for lib, metrics in libs_.items()
        }
        for scenario, libs_ in grouped.items()
    }


# -- report ------------------------------------------------------------------------------

LABELS = {
    "klaviyo-signal": "klaviyo-signal",
    "klaviyo-signal (no limits)": "klaviyo-signal `rate_limits=None`",
    "klaviyo-signal sync": "klaviyo-signal `sync_mode=True`",
    "segment": "Segment `segment-analytics-python`",
    "posthog": "PostHog `posthog`",
    "rudder": "Rudder `rudder-sdk-python`",
    "klaviyo-api": "Klaviyo SDK `create_event`",
    "klaviyo-api bulk": "Klaviyo SDK `bulk_create_events`",
    "requests": "bare `requests.Session`",
}
ORDER = list(LABELS)
CHART_LABELS = {
    "klaviyo-signal": "klaviyo-signal",
    "klaviyo-signal (no limits)": "klaviyo-signal\nrate_limits=None",
    "klaviyo-signal sync": "klaviyo-signal\nsync_mode=True",
    "segment": "Segment",
    "posthog": "PostHog",
    "rudder": "Rudder",
    "klaviyo-api": "Klaviyo SDK\ncreate_event",
    "klaviyo-api bulk": "Klaviyo SDK\nbulk_create_events",
    "requests": "bare requests",
}


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


COUNTS = {"throttled", "delivered", "windows"}


def cell(summary: dict[str, Any], scenario: str, lib: str, metric: str, pct: bool = False) -> str:
    m = summary.get(scenario, {}).get(lib, {}).get(metric)
    if m is None:
        return "–"
    if pct:

        def f(v: float) -> str:
            return f"{v * 100:.0f}%"
    elif metric in COUNTS:

        def f(v: float) -> str:
            return f"{v:,.0f}"
    else:
        f = _fmt
    if m["n"] == 1 or m["min"] == m["max"]:
        return f(m["median"])
    return f"{f(m['median'])} ({f(m['min'])}–{f(m['max'])})"


def med(summary: dict[str, Any], scenario: str, lib: str, metric: str) -> float | None:
    m = summary.get(scenario, {}).get(lib, {}).get(metric)
    return None if m is None else m["median"]


def tables(summary: dict[str, Any], has_limits_kwarg: bool, scale: float) -> str:
    out = []
    out.append("Medians over the repetitions, (min–max) when they differ; `–` = not applicable.\n")
    out.append(
        "| Library | caller µs/call median | p99 | worst | events/s end to end | "
        "CPU µs/event | bytes/queued event | requests/10k events | sync µs/call |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lib in ORDER:
        if not any(lib in summary.get(s, {}) for s in ("cost", "throughput", "memory", "sync")):
            continue
        tp = summary.get("throughput", {}).get(lib, {})
        partial = tp.get("complete", {}).get("min", 1.0) < 1.0
        out.append(
            f"| {LABELS[lib]} | {cell(summary, 'cost', lib, 'median_us')} "
            f"| {cell(summary, 'cost', lib, 'p99_us')} | {cell(summary, 'cost', lib, 'max_us')} "
            f"| {cell(summary, 'throughput', lib, 'events_per_s')}{' ¹' if partial else ''} "
            f"| {cell(summary, 'throughput', lib, 'cpu_us_per_event')} "
            f"| {cell(summary, 'memory', lib, 'bytes_per_event')} "
            f"| {cell(summary, 'throughput', lib, 'requests_per_10k')} "
            f"| {cell(summary, 'sync', lib, 'median_us')} |"
        )
    out.append("")
    if any(
        m.get("complete", {}).get("min", 1.0) < 1.0 for m in summary.get("throughput", {}).values()
    ):
        out.append(
            "¹ did not deliver every event before the run's deadline in some "
            "repetition: events/s is what the sink counted by then.\n"
        )

    window = 60.0 / scale
    out.append(
        f"**Against Klaviyo's limits** (sink enforcing 350/s + 3,500/min on "
        f"`/api/events` and 10/s + 150/min on bulk jobs in fixed windows with a random "
        f"phase, time scale {scale:g}: a 1 s window lasts {1 / scale:g} s, a 1 min window "
        f"{window:g} s; the client's limiter spans scaled alike). Each library is offered "
        f"{LIMITS_OFFER:g}× the allowed rate. Allowed = 150 jobs × 1,000 events per steady "
        f"window, the long-run most the bulk endpoint accepts; accepted = events of whole "
        f"steady windows' worth of jobs (150 per window) over the time until the sink "
        f"accepted the next job (`windows` = how many; 0: the steady limit never bound, "
        f"rate over the whole run).\n"
    )
    out.append(
        "| Library | 429s received | windows | events/s accepted | allowed events/s "
        "| share of allowed |"
    )
    out.append("|---|---:|---:|---:|---:|---:|")
    for lib in ORDER:
        if lib not in summary.get("limits", {}):
            continue
        lm = summary["limits"][lib]
        partial = lm.get("complete", {}).get("min", 1.0) < 1.0
        out.append(
            f"| {LABELS[lib]} | {cell(summary, 'limits', lib, 'throttled')} "
            f"| {cell(summary, 'limits', lib, 'windows')}{' ²' if partial else ''} "
            f"| {cell(summary, 'limits', lib, 'events_per_s')} "
            f"| {cell(summary, 'limits', lib, 'allowed_per_s')} "
            f"| {cell(summary, 'limits', lib, 'share', pct=True)} |"
        )
    out.append("")
    if any(m.get("complete", {}).get("min", 1.0) < 1.0 for m in summary.get("limits", {}).values()):
        out.append(
            "² did not get every offered event accepted before its deadline; the rate is "
            "over what the sink accepted by then.\n"
        )

    out.append(
        "**Ratios** (klaviyo-signal against each peer, medians; > 1 = klaviyo-signal better):\n"
    )
    fast = "klaviyo-signal (no limits)" if has_limits_kwarg else "klaviyo-signal"
    out.append(
        "| Peer | caller median | worst call | events/s | CPU/event | memory/event | requests |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|")

    def ratio(a: float | None, b: float | None) -> str:
        if a is None or b is None or b == 0 or a == 0:
            return "–"
        return f"{a / b:.2f}×"

    ks = "klaviyo-signal"
    for peer in ("segment", "posthog", "rudder", "klaviyo-api", "klaviyo-api bulk"):
        cols = [
            ratio(med(summary, "cost", peer, "median_us"), med(summary, "cost", ks, "median_us")),
            ratio(med(summary, "cost", peer, "max_us"), med(summary, "cost", ks, "max_us")),
            ratio(
                med(summary, "throughput", fast, "events_per_s"),
                med(summary, "throughput", peer, "events_per_s"),
            ),
            ratio(
                med(summary, "throughput", peer, "cpu_us_per_event"),
                med(summary, "throughput", fast, "cpu_us_per_event"),
            ),
            ratio(
                med(summary, "memory", peer, "bytes_per_event"),
                med(summary, "memory", ks, "bytes_per_event"),
            ),
            ratio(
                med(summary, "throughput", peer, "requests_per_10k"),
                med(summary, "throughput", fast, "requests_per_10k"),
            ),
        ]
        out.append(f"| {LABELS[peer]} | " + " | ".join(cols) + " |")
    out.append("")
    out.append(targets(summary, has_limits_kwarg))
    return "\n".join(out)


def targets(summary: dict[str, Any], has_limits_kwarg: bool) -> str:
    """Issue 3's background-delivery targets, each with its measured value and verdict."""
    fast = "klaviyo-signal (no limits)" if has_limits_kwarg else "klaviyo-signal"
    ks, seg, bulk = "klaviyo-signal", "segment", "klaviyo-api bulk"

    def get(s: str, lib: str, m: str) -> float | None:
        return med(summary, s, lib, m)

    rows = []

    def add(name: str, value: float | None, goal: float, higher: bool, unit: str) -> None:
        if value is None:
            rows.append(f"| {name} | – | {unit.format(goal)} | not measured |")
            return
        ok = value >= goal if higher else value <= goal
        miss = (
            ""
            if ok
            else (
                f" (by {goal / value:.1f}×)"
                if higher and value
                else f" (by {value / goal:.1f}×)"
                if goal
                else ""
            )
        )
        rows.append(
            f"| {name} | {unit.format(value)} | {unit.format(goal)} "
            f"| {'**holds**' if ok else 'misses' + miss} |"
        )

    def r(a: float | None, b: float | None) -> float | None:
        return None if a is None or b in (None, 0) else a / b

    add(
        "caller cost: Segment median / ours",
        r(get("cost", seg, "median_us"), get("cost", ks, "median_us")),
        4,
        True,
        "{:.2f}×",
    )
    add(
        "worst call: ours / Segment's worst",
        r(get("cost", ks, "max_us"), get("cost", seg, "max_us")),
        0.1,
        False,
        "{:.2f}",
    )
    add(
        "throughput, limits off: ours / Segment",
        r(get("throughput", fast, "events_per_s"), get("throughput", seg, "events_per_s")),
        3,
        True,
        "{:.2f}×",
    )
    add(
        "throughput, limits off: ours / Klaviyo SDK bulk",
        r(get("throughput", fast, "events_per_s"), get("throughput", bulk, "events_per_s")),
        10,
        True,
        "{:.2f}×",
    )
    add(
        "throughput, default limits: events/s (10 jobs × 1,000/s = 10,000)",
        get("throughput", ks, "events_per_s"),
        9000,
        True,
        "{:,.0f}",
    )
    add(
        "CPU per event: ours / Segment",
        r(get("throughput", fast, "cpu_us_per_event"), get("throughput", seg, "cpu_us_per_event")),
        1 / 3,
        False,
        "{:.2f}",
    )
    add(
        "memory per queued event: ours / Segment",
        r(get("memory", ks, "bytes_per_event"), get("memory", seg, "bytes_per_event")),
        0.5,
        False,
        "{:.2f}",
    )
    throttled = get("limits", ks, "throttled")
    rows.append(
        "| limits enforced: 429s received | "
        + ("–" if throttled is None else f"{throttled:.0f}")
        + " | 0 | "
        + ("not measured" if throttled is None else "**holds**" if throttled == 0 else "misses")
        + " |"
    )
    add(
        "limits enforced: share of allowed throughput",
        get("limits", ks, "share"),
        0.9,
        True,
        "{:.0%}",
    )
    head = [
        "**Issue 3 targets** (klaviyo-signal with default settings unless noted; "
        f'"limits off" = {LABELS[fast]}):\n',
        "| Target | measured | goal | verdict |",
        "|---|---:|---:|---|",
    ]
    return "\n".join(head + rows) + "\n"


def chart(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("cost", "median_us", "caller cost, µs/call (median)\nlower is better", True),
        ("cost", "max_us", "worst single call, µs\nlower is better", True),
        ("throughput", "events_per_s", "end-to-end events/s\nhigher is better", True),
        ("throughput", "cpu_us_per_event", "process CPU µs per event\nlower is better", True),
        ("memory", "bytes_per_event", "bytes per queued event\nlower is better", False),
        ("throughput", "requests_per_10k", "requests per 10,000 events\nlower is better", True),
        ("limits", "share", "share of Klaviyo's allowed throughput\n(429s on the bar)", False),
        ("sync", "median_us", "sync mode, µs per call (median)\nlower is better", False),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(13, 17))
    for ax, (scenario, metric, title, log) in zip(axes.flat, panels, strict=False):
        data = summary.get(scenario, {})
        names = [lib for lib in ORDER if metric in data.get(lib, {})]
        meds = [data[n][metric]["median"] for n in names]
        lows = [data[n][metric]["median"] - data[n][metric]["min"] for n in names]
        highs = [data[n][metric]["max"] - data[n][metric]["median"] for n in names]
        colors = ["#2b6cb0" if n.startswith("klaviyo-signal") else "#a0aec0" for n in names]
        ys = range(len(names))
        ax.barh(list(ys), meds, xerr=[lows, highs], color=colors, capsize=3)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([CHART_LABELS[n] for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if log and meds and min(meds) > 0:
            ax.set_xscale("log")
        for y, v, n, hi in zip(ys, meds, names, highs, strict=True):
            text = f"{v:.0%}" if metric == "share" else _fmt(v)
            if scenario == "limits":
                text += f"  ({data[n]['throttled']['median']:.0f} × 429)"
            ax.text(v + hi, y, "  " + text, va="center", fontsize=8)
        ax.margins(x=0.35)
    fig.suptitle("klaviyo-signal vs peers (same machine, same run; error bars = min–max)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def host() -> dict[str, str]:
    """The host a run measured: platform, CPU model, cores, memory, kernel, Python build.

    Timings from two hosts are not comparable (a newer kernel or CPython build moved the
    worst caller call from under a millisecond to several), so every figure is stored
    and shown beside the host it came from.
    """
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    build, built = platform.python_build()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()} ({platform.version()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": f"{build}, {built}, {platform.python_compiler()}",
        "switch_interval_ms": f"{sys.getswitchinterval() * 1000:g}",
    }


def machine() -> dict[str, str]:
    box = host()
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for dist in (
        "klaviyo-signal",
        "segment-analytics-python",
        "posthog",
        "rudder-sdk-python",
        "klaviyo-api",
        "requests",
    ):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "klaviyo_signal"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        commit += " + uncommitted changes" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "machine": f"{box['cpu']}, {box['cores']} cores, {box['memory']} RAM; "
        f"{box['kernel']}; {box['python']} ({box['python_build']}); "
        f"GIL switch interval {box['switch_interval_ms']} ms",
        "versions": ", ".join(versions),
        "commit": commit,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_docs(
    body: str, info: dict[str, str], command: str, took: float, mode: str, signal_kwargs: list[str]
) -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    header = (
        f"- **Date:** {info['date']}\n"
        f"- **Machine:** {info['machine']}\n"
        f"- **Command:** `{command}` ({mode} run, {took:.0f} s)\n"
        f"- **Code:** klaviyo-signal at `{info['commit']}`; Client keywords used when "
        f"accepted: {', '.join(f'`{k}`' for k in signal_kwargs) or 'none'}\n"
        f"- **Versions:** {info['versions']}\n"
    )
    (ASSETS / "bench.md").write_text(header + "\n" + body)
    section = (
        f"{START}\n<!-- written by bench/run.py: do not edit by hand -->\n\n"
        f"{header}\n![klaviyo-signal vs peers](assets/bench.png)\n\n{body}\n{END}"
    )
    page = PAGE.read_text() if PAGE.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START in page and END in page:
        before, rest = page.split(START, 1)
        after = rest.split(END, 1)[1]
        page = before + section + after
    else:
        page = page.rstrip() + "\n\n## Results\n\n" + section + "\n"
    PAGE.write_text(page)


# -- main --------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> None:
    result = run_one(
        "profile",
        "klaviyo-signal",
        "klaviyo",
        {"n": args.profile_calls, "top": 25},
        hard_timeout=180,
        max_requests=args.profile_calls * 3 + 5000,
    )
    if not result.get("ok"):
        sys.exit(1)
    text = result["text"]
    print(text)
    ASSETS.mkdir(parents=True, exist_ok=True)
    (ASSETS / "bench.profile.txt").write_text(text)
    print(f"bench: written {(ASSETS / 'bench.profile.txt').relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~1 minute: small counts, 1 repetition")
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile klaviyo-signal's caller path with cProfile and print it",
    )
    p.add_argument("--profile-calls", type=int, default=5000)
    p.add_argument("--reps", type=int, help="repetitions (default: 3 full, 1 quick)")
    p.add_argument(
        "--limit-scale",
        type=float,
        default=2.0,
        help="time scale of the limits run: the sink's windows and klaviyo-signal's "
        "limiter spans last 1/K of Klaviyo's (default 2: 150 jobs per 30 s window, an "
        "allowed 5,000 events/s, about half of what the client can produce)",
    )
    p.add_argument(
        "--only", help="comma-separated scenarios to run (cost,throughput,memory,limits,sync)"
    )
    p.add_argument(
        "--no-venv",
        action="store_true",
        help="run in the current interpreter (the [bench] extra must be installed)",
    )
    p.add_argument("--no-docs", action="store_true", help="print, write nothing under docs/")
    p.add_argument(
        "--from-json",
        metavar="PATH",
        help="rebuild tables, chart and page from a saved bench.json; run nothing",
    )
    argv = sys.argv[1:]
    args = p.parse_args(argv)
    if not args.no_venv:
        ensure_venv(argv)
    sys.path.insert(0, str(HERE))
    import libs

    if args.profile:
        profile(args)
        return

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        raw, took, command = saved["runs"], saved["seconds"], saved["command"]
        has_limits = any(r["lib"] == "klaviyo-signal (no limits)" for r in raw)
        summary = summarize(raw)
        body = tables(summary, has_limits, saved.get("scale", 1.0))
        print(body)
        chart(summary, ASSETS / "bench.png")
        write_docs(
            body, saved["info"], command, took, saved.get("mode", "full"), saved.get("kwargs", [])
        )
        return

    size = dict(SIZES["quick" if args.quick else "full"])
    if args.reps:
        size["reps"] = args.reps
    kwargs = libs.signal_kwargs()
    has_limits = "rate_limits" in kwargs
    used = sorted(
        k
        for k in (
            "flush_interval",
            "max_queue_size",
            "max_queue_bytes",
            "rate_limits",
            "timeout",
            "shutdown_timeout",
        )
        if k in kwargs
    )
    only = set(args.only.split(",")) if args.only else None
    reps = plan(size, has_limits, args.limit_scale)
    total = sum(1 for runs in reps for s, _, _ in runs if not only or s in only)
    print(
        f"bench: {'quick' if args.quick else 'full'} run, {size['reps']} repetition(s), "
        f"{total} measurements; klaviyo-signal "
        f"{'has' if has_limits else 'has no'} rate_limits/batching kwargs",
        flush=True,
    )
    started = time.monotonic()
    raw = []
    done = 0
    measured_on = host()
    for rep, runs in enumerate(reps, 1):
        for scenario, lib, spec in runs:
            if only and scenario not in only:
                continue
            done += 1
            t = time.monotonic()
            result = execute(scenario, lib, spec, args.limit_scale)
            metrics = metrics_of(scenario, result)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
            print(
                f"[{done}/{total}] rep {rep} {scenario:<10} {lib:<27} "
                f"{time.monotonic() - t:5.1f}s  {shown}",
                flush=True,
            )
            result.get("sink", {}).pop("accepted", None)
            raw.append(
                {
                    "rep": rep,
                    "scenario": scenario,
                    "lib": lib,
                    "spec": spec,
                    "metrics": metrics,
                    "host": measured_on,
                    "result": result,
                }
            )
    took = time.monotonic() - started
    summary = summarize(raw)
    body = tables(summary, has_limits, args.limit_scale)
    info = machine()
    command = "python bench/run.py" + ("" if not argv else " " + shlex.join(argv))
    print()
    print(body)
    print(f"bench: {took:.0f} s in all")
    if args.no_docs:
        return
    ASSETS.mkdir(parents=True, exist_ok=True)
    (ASSETS / "bench.json").write_text(
        json.dumps(
            {
                "info": info,
                "host": measured_on,
                "command": command,
                "seconds": took,
                "sizes": size,
                "mode": "quick" if args.quick else "full",
                "kwargs": used,
                "scale": args.limit_scale,
                "summary": summary,
                "runs": raw,
            },
            indent=1,
            default=str,
        )
    )
    chart(summary, ASSETS / "bench.png")
    write_docs(body, info, command, took, "quick" if args.quick else "full", used)
    print(f"bench: wrote docs/assets/bench.md, bench.png, bench.json and {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
