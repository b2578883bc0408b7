"""Every message of the third-party corpus gets one clear outcome from the SDK.

``tests/corpus/`` holds 241 messages that other tools wrote to test their Klaviyo
destinations (a copy of the shared corpus; see its README). Their expected bodies are
those tools' mappings, not ours; what we check is that each message either reaches the
local Klaviyo with a schema-valid body, is dropped with a reason, or is refused with a
ValidationError naming the field, and that nothing else ever happens.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from klaviyo_signal import Client, Delivery, DeliveryStatus, ValidationError, default_blueprint
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, assert_valid

CORPUS = Path(__file__).parents[1] / "corpus"
CASES = [
    json.loads(line)
    for name in ("segment_cases.jsonl", "rudder_cases.jsonl", "rudder_cases_historical.jsonl")
    for line in (CORPUS / name).read_text().splitlines()
    if line.strip()
]
UNSUPPORTED = "unsupported"


def _common(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": message.get("userId"),
        "anonymous_id": message.get("anonymousId"),
        "context": message.get("context"),
        "timestamp": message.get("timestamp") or message.get("originalTimestamp"),
        "message_id": message.get("messageId"),
    }


def replay(client: Client, message: dict[str, Any]) -> Delivery | str:
    """Send one Segment-spec message through the public API; return its outcome."""
    kind = message.get("type")
    if kind == "identify":
        return client.identify(traits=message.get("traits"), **_common(message))
    if kind == "track":
        return client.track(
            message.get("event"),  # type: ignore[arg-type]  # the corpus has a dict here once
            message.get("properties"),
            traits=message.get("traits"),
            **_common(message),
        )
    if kind in ("page", "screen"):
        return client.page(message.get("name"), message.get("properties"), **_common(message))
    return UNSUPPORTED  # group and unknown types have no Klaviyo mapping in this SDK


def _forward_everything() -> Any:
    blueprint = default_blueprint()
    for case in CASES:
        event = case["message"].get("event")
        if isinstance(event, str) and event.strip() and event not in blueprint.rules:
            blueprint = blueprint.enable(event)
    return blueprint


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKlaviyo]:
    with FakeKlaviyo() as server:
        yield server


@pytest.mark.parametrize("forward", [False, True], ids=["default", "forward-all"])
def test_every_corpus_message_has_a_clear_outcome(fake: FakeKlaviyo, forward: bool) -> None:
    """Each message is delivered with a valid body, dropped with a reason, or refused clearly."""
    assert len(CASES) == 241
    blueprint = _forward_everything() if forward else default_blueprint()
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, blueprint=blueprint)
    outcomes: Counter[str] = Counter()
    for case in CASES:
        fake.reset()
        try:
            outcome = replay(client, case["message"])
        except ValidationError as exc:
            text = str(exc)
            # The message names a field (a key path before a colon) and the rule after it.
            assert ": " in text, (case["name"], text)
            outcomes["refused"] += 1
            continue
        if outcome == UNSUPPORTED:
            outcomes[UNSUPPORTED] += 1
            continue
        assert isinstance(outcome, Delivery)
        if outcome.status is DeliveryStatus.DROPPED:
            assert outcome.reason, case["name"]
            assert fake.requests == []
        else:
            assert outcome.status is DeliveryStatus.DELIVERED, (case["name"], outcome)
            for request in fake.requests:
                assert_valid(request.path, request.body)
        outcomes[outcome.status.value] += 1
    assert sum(outcomes.values()) == 241
    assert outcomes[UNSUPPORTED] == 19  # 15 group + 4 'random' type messages
    # 40 carry a phone that is not E.164, a malformed email or an empty identifier.
    assert outcomes["refused"] == 40
    if forward:
        assert outcomes == {"delivered": 182, "refused": 40, UNSUPPORTED: 19}
    else:  # custom events are dropped until the blueprint enables them
        assert outcomes == {"delivered": 55, "dropped": 127, "refused": 40, UNSUPPORTED: 19}
