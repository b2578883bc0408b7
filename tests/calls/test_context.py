"""The request context (klaviyo_signal.request_context): calls inside it default to its person."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import klaviyo_signal
from klaviyo_signal import Client, DeliveryStatus, ValidationError, request_context
from klaviyo_signal.testing import FakeEvent, FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

ADA = {"user_id": "u-1", "anonymous_id": "anon-1", "traits": {"email": "ada@example.com"}}


@pytest.fixture
def client(fake: FakeKlaviyo) -> Iterator[Client]:
    """A sync-mode client talking to the fake."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True) as built:
        yield built


def only_event(fake: FakeKlaviyo) -> FakeEvent:
    """Return the one event the fake holds."""
    (event,) = fake.events
    return event


def test_a_call_inside_a_context_carries_its_identity_and_consent(
    client: Client, fake: FakeKlaviyo
) -> None:
    """track() without identity arguments sends the context's ids, email and consent."""
    with request_context(**ADA, consent={"marketing": True}):  # type: ignore[arg-type]
        client.track("Order Completed", {"value": 9.5})
    event = only_event(fake)
    assert event.profile.external_id == "u-1"
    assert event.profile.anonymous_ids == ("anon-1",)
    assert event.profile.email == "ada@example.com"
    assert event.properties["consent"] == {"marketing": True}


def test_identify_and_page_read_the_context_too(client: Client, fake: FakeKlaviyo) -> None:
    """identify() and page() fill what they leave out from the context."""
    with request_context(user_id=42, traits={"email": "ada@example.com"}):
        client.identify(traits={"first_name": "Ada"})
        client.page("Home")
    (profile,) = fake.profiles
    assert profile.external_id == "42"
    assert profile.email == "ada@example.com"
    assert profile.attributes["first_name"] == "Ada"
    assert [e.metric for e in fake.events] == ["page_view"]


def test_explicit_arguments_win(client: Client, fake: FakeKlaviyo) -> None:
    """A call's own arguments win: ids whole, traits key by key, consent by category."""
    with request_context(
        user_id="u-1",
        traits={"email": "ada@example.com", "first_name": "Ada"},
        consent={"Marketing": False, "analytics": True},
    ):
        delivery = client.track(
            "Order Completed",
            user_id="u-1",
            traits={"email": "ada@work.example.com"},
            consent={"marketing": True},
        )
    assert delivery.status is DeliveryStatus.DELIVERED
    event = only_event(fake)
    assert event.profile.email == "ada@work.example.com"
    assert event.properties["consent"] == {"analytics": True, "marketing": True}


def test_a_category_in_the_calls_segment_context_wins_over_the_request_context(
    client: Client, fake: FakeKlaviyo
) -> None:
    """Consent in the call's context.consent.categoryPreferences beats the request context's."""
    with request_context(user_id="u-1", consent={"marketing": False}):
        delivery = client.track(
            "Order Completed", context={"consent": {"categoryPreferences": {"marketing": True}}}
        )
    assert delivery.status is DeliveryStatus.DELIVERED
    assert only_event(fake).properties["consent"] == {"marketing": True}


def test_a_call_naming_someone_else_takes_nothing_from_the_context(
    client: Client, fake: FakeKlaviyo
) -> None:
    """An admin's request tracking for a customer sends neither the admin's ids nor consent."""
    with request_context(**ADA, consent={"marketing": False}):  # type: ignore[arg-type]
        delivery = client.track("Order Completed", user_id="customer-7")
    assert delivery.status is DeliveryStatus.DELIVERED
    event = only_event(fake)
    assert (event.profile.external_id, event.profile.email) == ("customer-7", None)
    assert event.profile.anonymous_ids == ()
    assert event.properties["consent"] == {}


def test_an_int_user_id_equal_to_the_contexts_is_the_same_person(
    client: Client, fake: FakeKlaviyo
) -> None:
    """user_id=42 inside a context of "42" still gets the context's email."""
    with request_context(user_id="42", traits={"email": "ada@example.com"}):
        client.track("Order Completed", user_id=42)
    assert only_event(fake).profile.email == "ada@example.com"


def test_a_context_denying_marketing_drops_the_call(client: Client, fake: FakeKlaviyo) -> None:
    """A visitor who denied marketing is not tracked, with consent as the reason."""
    with request_context(anonymous_id="anon-1", consent={"marketing": False}):
        delivery = client.track("Order Completed")
    assert delivery.status is DeliveryStatus.DROPPED
    assert "marketing denied" in (delivery.reason or "")
    assert fake.events == []


def test_subscribe_does_not_read_the_context(client: Client, fake: FakeKlaviyo) -> None:
    """A subscription names its address: the context's denial does not refuse it."""
    with request_context(user_id="u-1", consent={"marketing": False}):
        delivery = client.subscribe(email="ada@example.com")
    assert delivery.status is DeliveryStatus.DELIVERED


def test_nested_contexts_merge_and_the_outer_one_comes_back() -> None:
    """An inner context inherits what it leaves out; leaving it restores the outer one."""
    assert klaviyo_signal.current_context() is None
    with request_context(anonymous_id="anon-1", consent={"marketing": True}) as outer:
        with request_context(user_id="u-1") as inner:
            assert inner.anonymous_id == "anon-1"
            assert inner.consent == {"marketing": True}
            assert klaviyo_signal.current_context() is inner
        assert klaviyo_signal.current_context() is outer
        with request_context(anonymous_id="anon-2") as other:
            assert other.consent == {}  # another visitor: nothing of the outer one
    assert klaviyo_signal.current_context() is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"user_id": ""}, "request context user_id: must not be empty"),
        ({"anonymous_id": 1.5}, "request context anonymous_id: must be a str or int"),
        ({"traits": {"email": "not-an-address"}}, "request context traits['email']"),
        ({"consent": {"marketing": "yes"}}, "consent['marketing']: must be True or False"),
        ({"consent": ["marketing"]}, "request context consent: must be a mapping"),
    ],
)
def test_a_bad_value_is_refused_when_the_context_is_entered(
    arguments: dict[str, object], message: str
) -> None:
    """ValidationError at request_context() names the field and the rule."""
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):  # noqa: SIM117
        with request_context(**arguments):  # type: ignore[arg-type]
            pass


def test_threads_and_tasks_each_see_their_own_context() -> None:
    """A thread started inside a context sees none; two asyncio tasks never see each other's."""
    seen: list[object] = []
    with request_context(user_id="u-1"):
        thread = threading.Thread(target=lambda: seen.append(klaviyo_signal.current_context()))
        thread.start()
        thread.join()
    assert seen == [None]

    async def visit(user: str) -> str | None:
        with request_context(user_id=user):
            await asyncio.sleep(0.01)
            context = klaviyo_signal.current_context()
            return None if context is None else context.user_id

    async def both() -> list[str | None]:
        return list(await asyncio.gather(visit("a"), visit("b")))

    assert asyncio.run(both()) == ["a", "b"]


def test_background_calls_in_a_context_arrive(fake: FakeKlaviyo) -> None:
    """In background mode the context's identity reaches Klaviyo after a flush."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as background:
        with request_context(user_id="u-1", traits={"email": "ada@example.com"}):
            background.track("Order Completed", {"value": 1})
        assert background.flush(10.0)
    event = only_event(fake)
    assert (event.profile.external_id, event.profile.email) == ("u-1", "ada@example.com")


def test_explain_inside_a_context_shows_what_the_call_sends(
    client: Client, fake: FakeKlaviyo
) -> None:
    """explain() fills what a call leaves out from the context, as the call does."""
    calls = [
        ("identify", (), {"traits": {"first_name": "Ada"}}),
        ("track", ("Order Completed", {"value": 9.5}), {}),
        ("page", ("Home",), {}),
    ]
    with request_context(**ADA, consent={"marketing": True}):  # type: ignore[arg-type]
        for kind, args, kwargs in calls:
            fixed = {**kwargs, "message_id": f"m-{kind}", "timestamp": "2026-12-01T10:00:00Z"}
            explained = client.explain(kind, *args, **fixed)  # type: ignore[arg-type]
            before = len(fake.requests)
            getattr(client, kind)(*args, **fixed)
            sent = fake.requests[before:]
            assert [(r.path, r.body) for r in explained.requests] == [
                (r.path, r.body) for r in sent
            ], kind
    assert "ada@example.com" in str(explained.requests[0].body)
