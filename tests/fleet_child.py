"""One process of a test fleet: ``python tests/fleet_child.py '<json spec>'``.

It builds a Client from the spec, prints ``READY``, and on a ``go`` line from stdin queues
``calls`` events, each in a bulk job of its own. On a ``stop`` line (or at once with
``"wait": true`` after a flush) it closes the client and prints one ``RESULT {json}`` line:
the client's stats and the wall-clock time its last request was answered.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from klaviyo_signal import Client, Delivery, default_blueprint


def main(spec: dict[str, Any]) -> None:
    answered: list[float] = []

    def on_delivery(delivery: Delivery) -> None:
        answered.append(time.time())

    client = Client(
        spec["public_key"],
        spec["private_key"],
        base_url=spec["url"],
        blueprint=default_blueprint().enable("Signed Up"),
        rate_limits={"POST /api/event-bulk-create-jobs": tuple(spec["limits"])},
        rate_limit_store=spec.get("store"),
        flush_interval=0.01,
        shutdown_timeout=spec.get("shutdown_timeout", 0.5),
        on_delivery=on_delivery,
    )
    print("READY", flush=True)
    sys.stdin.readline()  # go
    for i in range(spec["calls"]):
        client.track("Signed Up", {"n": i}, user_id=f"user-{i}")
        time.sleep(0.05)  # past flush_interval: each call seals a job of its own
    if spec.get("wait"):
        client.flush(30)
    else:
        sys.stdin.readline()  # stop
    client.close()
    stats = client.stats
    result = {
        "delivered": stats.delivered,
        "dropped": stats.dropped,
        "rate_limited": stats.rate_limited,
        "last_answer": max(answered, default=None),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
