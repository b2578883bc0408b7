"""One measurement in a fresh process: ``python bench/worker.py '<json spec>'``.

The spec names the scenario, the library, the sink URL and the sizes; the worker prints
one JSON line with what it measured and leaves with ``os._exit`` so no library's exit
hook (flush at exit) runs on the clock or hangs on a sink that is gone.

Scenarios:
    cost        caller cost of each call in background mode (perf_counter_ns per call)
    throughput  first call until the sink counted every event; process CPU; requests
    memory      peak RSS growth while the sender is stuck on a sink that never answers
    limits      against a sink enforcing Klaviyo's limits: what got through, 429s
    sync        one event per request, sent before the call returns
    profile     cProfile of klaviyo-signal's caller path (background) and sync path
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libs

_PACE_EVERY = 100  # limits: events between two checks of the producer's pace


def sink_wait(url: str, events: int, timeout: float) -> dict[str, Any]:
    """Block until the sink counted ``events`` (or ``timeout``); return its answer."""
    with urllib.request.urlopen(
        f"{url}/_wait?events={events}&timeout={max(timeout, 0.01):.3f}", timeout=timeout + 30
    ) as response:
        return json.loads(response.read())


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    n = len(ordered)
    return {
        "median_us": statistics.median(ordered) / 1000,
        "p99_us": ordered[min(n - 1, int(n * 0.99))] / 1000,
        "max_us": ordered[-1] / 1000,
        "mean_us": sum(ordered) / n / 1000,
    }


class Background:
    """A background-mode library behind one interface: call(i), flush(), dropped count."""

    def __init__(self, lib: str, url: str, queue: int, *, pause: bool = False) -> None:
        self.lib = lib
        self.dropped = 0
        self.client: Any
        if lib.startswith("klaviyo-signal"):
            self.client = libs.make_signal(
                url, queue=queue, limits=lib == "klaviyo-signal", pause=pause
            )
            self._call = self._signal
        elif lib == "segment":
            self.client = libs.make_segment(url, queue=queue)
            self._call = self._segment
        elif lib == "rudder":
            self.client = libs.make_rudder(url, queue=queue)
            self._call = self._segment
        elif lib == "posthog":
            self.client = libs.make_posthog(url, queue=queue)
            self._call = self._posthog
        else:
            raise ValueError(f"{lib} has no background mode")

    def _signal(self, i: int) -> None:
        user_id, email, properties = libs.order(i)
        delivery = self.client.track(
            "Order Completed", properties, traits={"email": email}, user_id=user_id
        )
        if str(getattr(delivery, "status", "")) == "dropped":
            self.dropped += 1

    def _segment(self, i: int) -> None:
        user_id, email, properties = libs.order(i)
        ok, _ = self.client.track(
            user_id, "Order Completed", properties, context={"traits": {"email": email}}
        )
        if not ok:
            self.dropped += 1

    def _posthog(self, i: int) -> None:
        user_id, email, properties = libs.order(i)
        if (
            self.client.capture(
                "Order Completed",
                distinct_id=user_id,
                properties={**properties, "$set": {"email": email}},
            )
            is None
        ):
            self.dropped += 1

    def call(self, i: int) -> None:
        self._call(i)

    def flush(self) -> None:
        if self.lib.startswith("klaviyo-signal"):
            self.client.flush(120)
        else:
            self.client.flush()


# -- scenarios ----------------------------------------------------------------------------


def cost(spec: dict[str, Any]) -> dict[str, Any]:
    lib = Background(spec["lib"], spec["url"], spec["n"] + 1000)
    for i in range(50):  # warm up: threads started, connection open, code paths hot
        lib.call(i)
    time.sleep(0.2)
    # Pay every library's import-time collection debt before timing, as the throughput
    # run does: a long-running server did so long ago. Full collections the calls
    # themselves cause (a queue of objects the collector must visit) still count.
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    collections = CollectionTimes()
    gc.callbacks.append(collections)
    for i in range(spec["n"]):
        start = clock()
        lib.call(i)
        samples.append(clock() - start)
    gc.callbacks.remove(collections)
    return {**percentiles(samples), "dropped": lib.dropped, "gc": collections.summary()}


class CollectionTimes:
    """A ``gc.callbacks`` entry: how many collections of each generation ran during the
    timed calls, on which thread, and the longest of each (what a full collection of a
    long queue would cost the caller shows here)."""

    def __init__(self) -> None:
        self._started: dict[int, int] = {}
        self.seen: dict[str, list[int]] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter_ns()
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = now
            return
        began = self._started.pop(thread, now)
        where = "caller" if thread == threading.main_thread().ident else "other"
        self.seen.setdefault(f"gen{info['generation']} {where}", []).append(now - began)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            key: {"count": len(times), "max_us": max(times) / 1000}
            for key, times in sorted(self.seen.items())
        }


def throughput(spec: dict[str, Any]) -> dict[str, Any]:
    lib_name, url, n, deadline = spec["lib"], spec["url"], spec["n"], spec["deadline"]
    sender: Any = None
    if lib_name in ("klaviyo-api", "klaviyo-api bulk"):
        sender = libs.make_klaviyo_api(url)
    else:
        sender = Background(lib_name, url, n + 1000)
    gc.collect()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    end = t0 + deadline
    sent = 0
    if lib_name == "klaviyo-api":
        while sent < n and time.monotonic() < end:
            libs.klaviyo_api_event(sender, sent)
            sent += 1
    elif lib_name == "klaviyo-api bulk":
        while sent < n and time.monotonic() < end:
            count = min(1000, n - sent)
            libs.klaviyo_api_bulk(sender, sent, count)
            sent += count
    else:
        for i in range(n):
            sender.call(i)
        sent = n
        threading.Thread(target=sender.flush, daemon=True).start()
    answer = sink_wait(url, sent, end - time.monotonic())
    cpu = time.process_time() - cpu0
    done_at = answer["at"]
    complete = done_at is not None
    elapsed = (done_at if complete else time.monotonic()) - t0
    delivered = sent if complete else answer["events"]
    result: dict[str, Any] = {
        "sent": sent,
        "delivered": delivered,
        "complete": complete and sent == n,
        "elapsed_s": elapsed,
        "events_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_event": cpu / max(delivered, 1) * 1e6,
        "dropped": getattr(sender, "dropped", 0),
    }
    if lib_name.startswith("klaviyo-signal"):
        result["stats"] = libs.signal_stats(sender.client)
    return result


def memory(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["n"]
    lib = Background(spec["lib"], spec["url"], n + 10_000, pause=True)
    for i in range(2000):  # the sender takes its first batch and blocks on the silent sink
        lib.call(i)
    time.sleep(0.5)
    gc.collect()
    before = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for i in range(n):
        lib.call(i)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after = rss_bytes()
    growth = max(peak, after) - before
    return {
        "queued": n - lib.dropped,
        "dropped": lib.dropped,
        "rss_before": before,
        "peak_before": peak_before,
        "rss_after": after,
        "peak_after": peak,
        "bytes_per_event": growth / max(n - lib.dropped, 1),
    }


def scale_signal_limiter(scale: float) -> bool:
    """Shrink klaviyo-signal's limiter windows like the sink's (bench only, best effort).

    The limiter's window lengths are not public configuration, so this reaches into
    ``klaviyo_signal._delivery.ratelimit``; it returns False when that module has no such knob.
    """
    try:
        from klaviyo_signal._delivery import ratelimit as _ratelimit
    except ImportError:
        return False
    limiter = getattr(_ratelimit, "EndpointLimiter", None)
    init = getattr(limiter, "__init__", None)
    code = getattr(init, "__code__", None)
    if limiter is None or code is None or "spans" not in code.co_varnames:
        return False
    spans = (1.0 / scale, 60.0 / scale)

    def scaled_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["spans"] = spans
        init(self, *args, **kwargs)

    limiter.__init__ = scaled_init
    return True


def limits(spec: dict[str, Any]) -> dict[str, Any]:
    """Offer ``n`` events at ``rate`` events/s (above the allowed rate) to the limited sink.

    The producer is paced (checked every ``_PACE_EVERY`` events) rather than flat out, so
    the sink's limit and not the process's CPU decides how fast events get through, and
    the backlog stays proportional to the excess. ``rate`` None: as fast as it can.
    """
    lib_name, url, n, deadline = spec["lib"], spec["url"], spec["n"], spec["deadline"]
    scale = spec.get("scale", 1.0)
    rate = spec.get("rate")
    if scale != 1.0 and lib_name == "klaviyo-signal" and not scale_signal_limiter(scale):
        raise RuntimeError(f"cannot time-scale klaviyo-signal's limiter by {scale}")
    t0 = time.monotonic()
    end = t0 + deadline

    def pace(sent: int) -> None:
        if rate:
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    sent = 0
    errors = 0
    sender: Any
    if lib_name in ("klaviyo-api", "klaviyo-api bulk"):
        sender = libs.make_klaviyo_api(url)
        step = 1000 if lib_name == "klaviyo-api bulk" else 1
        while sent < n and time.monotonic() < end:
            count = min(step, n - sent)
            if sent % _PACE_EVERY < step:
                pace(sent)
            try:
                if step == 1:
                    libs.klaviyo_api_event(sender, sent)
                else:
                    libs.klaviyo_api_bulk(sender, sent, count)
            except Exception:
                errors += 1
            sent += count
    else:
        sender = Background(lib_name, url, n + 1000)
        for i in range(n):
            if i % _PACE_EVERY == 0:
                pace(i)
                if time.monotonic() >= end:
                    break
            sender.call(i)
            sent = i + 1
        threading.Thread(target=sender.flush, daemon=True).start()
    produced_s = time.monotonic() - t0
    answer = sink_wait(url, sent, end - time.monotonic())
    result: dict[str, Any] = {
        "sent": sent,
        "errors": errors,
        "complete": answer["at"] is not None and sent == n,
        "produced_s": produced_s,
        "elapsed_s": time.monotonic() - t0,
    }
    if lib_name.startswith("klaviyo-signal"):
        result["stats"] = libs.signal_stats(sender.client)
    return result


def sync(spec: dict[str, Any]) -> dict[str, Any]:
    lib_name, url, n = spec["lib"], spec["url"], spec["n"]
    if lib_name == "klaviyo-signal sync":
        client = libs.make_signal(url, queue=10, limits=True, sync=True)

        def call(i: int) -> None:
            libs.signal_track(client, i)
    elif lib_name == "klaviyo-api":
        events = libs.make_klaviyo_api(url)

        def call(i: int) -> None:
            libs.klaviyo_api_event(events, i)
    else:
        session = libs.make_requests(url)

        def call(i: int) -> None:
            libs.requests_event(session, i)

    for i in range(20):
        call(i)
    samples = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    t0 = clock()
    for i in range(n):
        start = clock()
        call(i)
        samples.append(clock() - start)
    wall = (clock() - t0) / 1e9
    cpu = time.process_time() - cpu0
    return {
        **percentiles(samples),
        "calls_per_s": n / wall,
        "cpu_us_per_call": cpu / n * 1e6,
    }


def profile(spec: dict[str, Any]) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    out = io.StringIO()
    n = spec["n"]
    lib = Background("klaviyo-signal", spec["url"], n + 1000)
    for i in range(50):
        lib.call(i)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        lib.call(i)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        out.write(
            f"\n=== klaviyo-signal background: caller path of {n} track() calls, "
            f"top {spec['top']} by {key} ===\n"
        )
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(spec["top"])
    client = libs.make_signal(spec["url"], queue=10, limits=True, sync=True)
    m = max(n // 10, 200)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(m):
        libs.signal_track(client, i)
    profiler.disable()
    out.write(
        f"\n=== klaviyo-signal sync_mode=True: whole path of {m} calls (build, map, "
        f"encode, HTTP), top {spec['top']} by tottime ===\n"
    )
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(spec["top"])
    return {"text": out.getvalue()}


SCENARIOS = {
    "cost": cost,
    "throughput": throughput,
    "memory": memory,
    "limits": limits,
    "sync": sync,
    "profile": profile,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        result = {"ok": True, **SCENARIOS[spec["scenario"]](spec)}
    except Exception as exc:
        import traceback

        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
