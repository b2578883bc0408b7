"""explain(): what a call would send, and why, without sending it."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from klaviyo_signal import Client, ValidationError, default_blueprint
from klaviyo_signal._explain import CALL_KEYWORDS, ExplainedRequest, Explanation, explain
from klaviyo_signal._klaviyo.json import dumps
from klaviyo_signal._klaviyo.revisions import DEFAULT_REVISION
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, Capture


def run(kind: Any, *args: Any, require_consent: bool = False, **kwargs: Any) -> Explanation:
    return explain(
        blueprint=default_blueprint(),
        require_consent=require_consent,
        default_phone_region=None,
        revision=DEFAULT_REVISION,
        kind=kind,
        args=args,
        kwargs=kwargs,
    )


def test_send_shows_the_exact_request(capture: Capture) -> None:
    """The explained body is byte for byte what the client sends for the same call."""
    call = {
        "properties": {"order_id": "o-1", "revenue": 42.5, "currency": "GBP"},
        "user_id": "u-1",
        "message_id": "m-1",
        "timestamp": "2024-05-01T10:00:00Z",
    }
    explanation = run("track", "Order Completed", **call)
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=capture.url, sync_mode=True)
    client.track("Order Completed", **call)
    ((path, headers, body),) = capture.requests
    (request,) = explanation.requests
    assert (explanation.status, explanation.reason, explanation.rule) == (
        "send",
        None,
        "Order Completed",
    )
    assert (request.method, request.path) == ("POST", path)
    assert dumps(request.body) == body
    for name in ("revision", "Content-Type", "Accept", "User-Agent"):
        assert request.headers[name] == headers[name]


def test_the_key_is_masked() -> None:
    """The Authorization header shows only the key's pk_ prefix."""
    (request,) = run("identify", "u-1").requests
    assert request.headers["Authorization"] == "Klaviyo-API-Key pk_***"
    assert PRIVATE_KEY not in repr(request)
    assert request.path == "/api/profile-import"


def test_page_positional_arguments() -> None:
    """page takes name then properties positionally, as Client.page does."""
    (request,) = run("page", "Pricing", {"url": "https://x.example/"}, anonymous_id="a").requests
    body: Any = request.body
    assert body["data"]["attributes"]["properties"]["name"] == "Pricing"


@pytest.mark.parametrize(
    ("call", "rule", "reason"),
    [
        (("track", "Signed Up"), None, "enable('Signed Up')"),
        (("track", "Order Completed"), None, "marketing denied"),
    ],
)
def test_drops_say_why(call: tuple[str, str], rule: str | None, reason: str) -> None:
    """A dropped call explains itself and sends nothing."""
    consent = {"marketing": False} if reason == "marketing denied" else None
    explanation = run(*call, user_id="u-1", consent=consent)
    assert (explanation.status, explanation.rule, explanation.requests) == ("drop", rule, ())
    assert reason in (explanation.reason or "")


def test_a_disabled_rule_is_named() -> None:
    """A disabled rule is reported as the rule that decided."""
    explanation = explain(
        blueprint=default_blueprint().disable("Order Completed"),
        require_consent=False,
        default_phone_region=None,
        revision=DEFAULT_REVISION,
        kind="track",
        args=("Order Completed",),
        kwargs={"user_id": "u-1"},
    )
    assert (explanation.status, explanation.rule) == ("drop", "Order Completed")


def test_require_consent_applies() -> None:
    """With require_consent a call without a grant is explained as dropped."""
    assert run("page", user_id="u-1", require_consent=True).status == "drop"


@pytest.mark.parametrize(
    ("kind", "args", "kwargs", "message"),
    [
        ("track", (), {"user_id": "u"}, "missing 1 required positional argument: 'event'"),
        ("track", ("a", {}, "x"), {}, "takes at most 2 positional arguments"),
        ("page", ("Home",), {"name": "Home"}, "multiple values for argument 'name'"),
        ("identify", (), {"event": "x"}, "unexpected keyword argument 'event'"),
        ("alias", (), {}, "kind must be 'identify', 'track', 'page', 'subscribe' or"),
        ("subscribe", ("a@example.com",), {}, "takes 0 positional arguments"),
        ("unsubscribe", (), {"custom_source": "x"}, "unexpected keyword argument"),
    ],
)
def test_bad_arguments_raise_type_error(
    kind: Any, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """Arguments that do not fit the call raise TypeError, as the method would."""
    with pytest.raises(TypeError, match=message):
        explain(
            blueprint=default_blueprint(),
            require_consent=False,
            default_phone_region=None,
            revision=DEFAULT_REVISION,
            kind=kind,
            args=args,
            kwargs=kwargs,
        )


def test_bad_input_raises_like_the_call() -> None:
    """Invalid input raises the same ValidationError the call would."""
    with pytest.raises(ValidationError, match="no profile identifier"):
        run("track", "Order Completed")


@pytest.mark.parametrize("flag", [0, 1, "yes"])
def test_a_bad_backfill_flag_raises_like_the_call(flag: object) -> None:
    """explain() resolves and checks backfill= as track() does: a non-bool is refused,
    falsy or not."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, disabled=True)
    call = {"user_id": "u-1", "backfill": flag}
    with pytest.raises(ValidationError) as from_call:
        client.track("Order Completed", **call)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as from_explain:
        client.explain("track", "Order Completed", **call)
    assert str(from_explain.value) == str(from_call.value)
    assert "backfill: must be True or False" in str(from_call.value)
    client.close()


def test_explanations_are_plain_values() -> None:
    """Explanations compare by value and their bodies are JSON data."""
    first = run("identify", "u-1", {"email": "a@example.com"}, message_id="m")
    assert first == run("identify", "u-1", {"email": "a@example.com"}, message_id="m")
    assert isinstance(first.requests[0], ExplainedRequest)
    json.dumps(first.requests[0].body)


def test_explain_agrees_with_fake_klaviyo() -> None:
    """What explain shows is what FakeKlaviyo records: the recipe for users' own tests."""
    blueprint = default_blueprint("klaviyo_ecommerce")
    call = {"properties": {"order_id": "o", "total": 5, "products": [{"sku": "a"}]}, "user_id": "u"}
    explanation = explain(
        blueprint=blueprint,
        require_consent=False,
        default_phone_region=None,
        revision=DEFAULT_REVISION,
        kind="track",
        args=("Order Completed",),
        kwargs=call,
    )
    with FakeKlaviyo() as fake:
        client = Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, blueprint=blueprint
        )
        client.track("Order Completed", **call)
        recorded = [e.metric for e in fake.events_for(external_id="u")]
    explained = [
        r.body["data"]["attributes"]["metric"]["data"]["attributes"]["name"]
        for r in explanation.requests
    ]  # type: ignore[index, call-overload]
    assert recorded == explained == ["Placed Order", "Ordered Product"]


def test_explained_bodies_are_plain_json() -> None:
    """Explained bodies are plain data: json.dumps works on them as they are."""
    explanation = run("track", "Product Viewed", {"product_id": "p"}, user_id="u")
    (request,) = explanation.requests
    assert json.loads(json.dumps(request.body)) == request.body


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_subscriptions_show_the_job_sync_mode_sends(kind: str, capture: Capture) -> None:
    """subscribe/unsubscribe explain the very job a sync call sends."""
    call = {"email": "ann@example.com", "list_id": "News", "message_id": "m-1"}
    explanation = run(kind, **call)
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=capture.url, sync_mode=True)
    getattr(client, kind)(**call)
    ((path, _, body),) = capture.requests
    (request,) = explanation.requests
    assert (explanation.status, explanation.reason, explanation.rule) == ("send", None, None)
    assert (request.method, request.path) == ("POST", path)
    assert dumps(request.body) == body
    assert request.headers["Authorization"] == "Klaviyo-API-Key pk_***"


def test_a_bad_subscription_raises_like_the_call() -> None:
    with pytest.raises(ValidationError, match="pass email= or phone="):
        run("subscribe", list_id="News")


@pytest.mark.parametrize("kind", ["identify", "track", "page", "subscribe", "unsubscribe"])
def test_call_keywords_are_the_methods_parameters(kind: str) -> None:
    """explain() and the CLI's lines take exactly what the Client's method takes."""
    parameters = set(inspect.signature(getattr(Client, kind)).parameters) - {"self"}
    assert CALL_KEYWORDS[kind] == parameters
