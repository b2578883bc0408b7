"""The Client facade: wires the pipeline stages and owns their lifetime.

A call flows one way: input -> Message (cleaned, validated) -> consent gate -> blueprint
-> Klaviyo objects -> wire bytes -> sent now (sync mode) or queued (background mode).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from ._blueprint.blueprint import Blueprint, blueprint_for_variant
from ._blueprint.compiled import compile_blueprint
from ._blueprint.quick import quick_track
from ._blueprint.record import MESSAGE_ID as _MESSAGE_ID
from ._calls.consent import consent_drop_reason
from ._calls.context import CURRENT as _CONTEXT
from ._calls.message import Message, build_message, reseed_message_ids
from ._calls.subscription import build_subscription
from ._config import DISABLED_VARIABLE, PUBLISHED, Config, disabled_by_env, mask
from ._delivery.aio import off_loop, running_loop
from ._delivery.delivery import Board, Delivery, DeliveryStatus, OnDelivery, Ticket
from ._delivery.lifecycle import closing, forget, install_signal_handlers, manage, unit_flushes
from ._delivery.outbox import Outbox
from ._delivery.ratelimit import RateLimits
from ._delivery.ratestore import open_rate_store
from ._delivery.stats import Counters, Stats, drop_key, failure_key
from ._delivery.sync import SyncDelivery, encode_requests
from ._delivery.worker import Worker
from ._errors import ConfigurationError, RevisionWarning
from ._errors import shown as _shown
from ._explain import ExplainKind, Explanation, explain
from ._flushing import Flushing, FlushReport, checked_budget, flush_after
from ._klaviyo.models import Action, KlaviyoObject, with_backfill
from ._klaviyo.revisions import DEFAULT_REVISION, PROFILE_JOBS_OPERATION, call_backfill
from ._klaviyo.revisions import revision as revision_named
from ._klaviyo.transport import HTTPRequest, HTTPResponse, KlaviyoAPI, RequestsTransport, Transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Client", "ClientOptions"]

log = logging.getLogger("klaviyo_signal")
# Read once per call: one lookup when no request context is set (the hot path).
_current_context = _CONTEXT.get

_F = TypeVar("_F", bound=Callable[..., Any])

# The reason (and dropped_by_reason key) of every call a disabled client makes.
_DISABLED = "disabled"

# Klaviyo answers bulk jobs at once (202, processed later); 2 s is ample for an answer.
_MIN_ANSWER_TIMEOUT = 2.0


class ClientOptions(TypedDict, total=False):
    """``Client``'s keyword options, for typing ``from_env(**options)`` and
    ``from_install(payload, **options)``; each means what the Client's argument does."""

    base_url: str
    revision: str
    sync_mode: bool
    blueprint: Blueprint | None
    require_consent: bool
    default_phone_region: str | None
    max_retries: int
    timeout: float
    on_delivery: OnDelivery | None
    max_queue_size: int
    shutdown_timeout: float
    flush_interval: float
    max_queue_bytes: int
    block_on_full: bool
    rate_limits: RateLimits | Literal["published"] | None
    strict_revision: bool
    backfill: bool
    transport: Transport | None
    disabled: bool | None
    rate_limit_store: str | None
    outbox: str | os.PathLike[str] | None


class Client:
    """Sends identify, track and page calls, and list subscriptions, to Klaviyo.

    Build one per process and share it: it is thread-safe, and fork-safe (a forked child
    gets its own queue and worker). In background mode (the default) calls return at once
    and a worker thread sends them in bulk jobs, paced to Klaviyo's rate limits;
    ``sync_mode=True`` sends before each call returns and raises on failure, for scripts
    and notebooks. See docs/delivery.md. In coroutines, ``await delivery``, ``aflush``,
    ``aclose``, ``async with`` and ``atrack``/``apage``/``aidentify`` never block the event
    loop (docs/asyncio.md); ``flush_after`` and ``flushing`` flush at the end of a Lambda
    invocation, a request or a task (docs/serverless.md).

    Args:
        public_api_key: The account's 6-character public key (Site ID).
        private_api_key: A private API key (``pk_...``) with events:write and profiles:write
            (and lists:write and subscriptions:write for ``subscribe``/``unsubscribe``).
        base_url: Klaviyo's API root; plain http only for loopback test servers.
        revision: The Klaviyo API revision sent on every request, and whose rules every
            body follows: one of ``SUPPORTED_REVISIONS`` (default ``DEFAULT_REVISION``).
            A deprecated or retired one warns with ``RevisionWarning``.
        sync_mode: Send before returning, and raise typed errors on failure.
        blueprint: The mapping onto Klaviyo's objects; default: ``default_blueprint()``.
        require_consent: Drop calls that carry no marketing consent grant.
        default_phone_region: Region (``"GB"``) for local phone numbers (``phone`` extra).
        max_retries: Retries on 429 and 5xx (Retry-After honoured) and connection errors.
        timeout: Read timeout in seconds for each request.
        on_delivery: Called with the final Delivery of every call (in background mode on
            the worker thread: keep it quick).
        max_queue_size: Background mode: calls queued or in flight before new ones are
            dropped with reason ``queue full``.
        shutdown_timeout: Seconds ``close()`` and the exit hook wait for queued calls.
        flush_interval: Background mode: seconds the oldest queued event waits for its bulk
            job to fill before the job is sent anyway.
        max_queue_bytes: Background mode: the (estimated) memory queued calls may hold.
        block_on_full: Background mode: make a call wait for room instead of dropping it
            when the queue is full.
        rate_limits: ``"published"`` (Klaviyo's published burst/steady limits), a mapping
            ``{"POST /api/event-bulk-create-jobs": (burst_per_second, steady_per_minute)}``
            that overrides them per endpoint (accounts with other quotas), or None to
            switch client-side pacing off (a 429 still pauses the endpoint).
        strict_revision: Ask Klaviyo to answer 410 (``RevisionGoneError``) once the
            revision is retired, instead of serving it as a later one with other rules.
        backfill: Send every event as a backfill (recorded without triggering flows),
            unless a call says ``backfill=False``.
        transport: What sends the HTTP requests (``klaviyo_signal.typing.Transport``),
            e.g. ``FakeKlaviyo.transport()`` in tests; default a requests session with
            urllib3 retries. A given transport is shared by sync mode and the worker and
            should not retry itself (the worker paces its own retries); closing the Client
            closes it.
        disabled: Check every call as usual (``ValidationError`` still raised) and send
            nothing: each ends ``dropped`` with reason ``disabled``, and no thread or
            socket is opened. None (the default): the ``KLAVIYO_SIGNAL_DISABLED``
            environment variable decides (``1``/``true``); an explicit value wins over it.
        rate_limit_store: Background mode: share each endpoint's rate limit with every
            process of the account that names the same store, ``"redis://host:6379/0"``
            (the ``redis`` extra) or ``"sqlite:///path/to/file.db"`` (one host); None:
            each process paces alone. See docs/scale.md.
        outbox: Background mode: the path of a SQLite file that keeps every queued call
            until Klaviyo has answered it, so calls survive the process being killed; the
            next process that opens it sends what is left. See docs/outbox.md.

    Raises:
        ConfigurationError: A key or option is invalid.
    """

    def __init__(
        self,
        public_api_key: str,
        private_api_key: str,
        *,
        base_url: str = "https://a.klaviyo.com",
        revision: str = DEFAULT_REVISION,
        sync_mode: bool = False,
        blueprint: Blueprint | None = None,
        require_consent: bool = False,
        default_phone_region: str | None = None,
        max_retries: int = 5,
        timeout: float = 10.0,
        on_delivery: OnDelivery | None = None,
        max_queue_size: int = 10_000,
        shutdown_timeout: float = 5.0,
        flush_interval: float = 1.0,
        max_queue_bytes: int = 50_000_000,
        block_on_full: bool = False,
        rate_limits: RateLimits | Literal["published"] | None = PUBLISHED,
        strict_revision: bool = False,
        backfill: bool = False,
        transport: Transport | None = None,
        disabled: bool | None = None,
        rate_limit_store: str | None = None,
        outbox: str | os.PathLike[str] | None = None,
    ) -> None:
        self._config = Config(
            public_api_key=public_api_key,
            private_api_key=private_api_key,
            base_url=base_url,
            revision=revision,
            sync_mode=sync_mode,
            blueprint=blueprint,
            require_consent=require_consent,
            default_phone_region=default_phone_region,
            max_retries=max_retries,
            timeout=timeout,
            on_delivery=on_delivery,
            max_queue_size=max_queue_size,
            shutdown_timeout=shutdown_timeout,
            flush_interval=flush_interval,
            max_queue_bytes=max_queue_bytes,
            block_on_full=block_on_full,
            rate_limits=rate_limits,  # type: ignore[arg-type]  # resolved by Config
            strict_revision=strict_revision,
            backfill=backfill,
            transport=transport,
            disabled=disabled_by_env() if disabled is None else disabled,
            rate_limit_store=rate_limit_store,
            outbox=outbox,
        )
        if self._config.disabled:
            log.warning(
                "klaviyo-signal: this Client is disabled (disabled=True or %s): calls are "
                "checked and dropped with reason 'disabled', nothing is sent",
                DISABLED_VARIABLE,
            )
        store = self._config.rate_limit_store
        self._rate_store = None if store is None else open_rate_store(store, public_api_key)
        self._revision = revision_named(self._config.revision)
        self._blueprint = compile_blueprint(
            self._config.blueprint, max_properties=self._revision.max_event_properties
        )
        status = self._revision.status()
        if status.state != "stable":
            warnings.warn(status.describe(self._revision.name), RevisionWarning, stacklevel=2)
        self._closed = False
        # Background calls that need no consent grant may take the fast lane (_blueprint/quick.py);
        # a backfill takes the full route.
        self._quick_lane = (
            not self._config.sync_mode
            and not self._config.require_consent
            and not self._config.backfill
            and not self._config.disabled
        )
        self._fresh_state()
        manage(self, reseed_message_ids)

    def _fresh_state(self) -> None:
        """Build the sync session, the counters and the (idle) background worker."""
        c = self._config
        self._stats = Counters()
        self._sync = SyncDelivery(
            _transport(c, max_retries=c.max_retries), self._stats, self._final
        )
        self._board = Board()
        self._worker = Worker(
            # The worker owns its retries (``_delivery/dispatch`` says why), so its
            # transport retries nothing. The factory holds the config, not the Client, so
            # a dropped Client can be collected.
            make_transport=functools.partial(
                _transport, c, max_retries=0, pool_size=1, borrowed=True
            ),
            limits=c.rate_limits,
            rule_for=self._blueprint.rule_for,
            stats=self._stats,
            board=self._board,
            on_delivery=c.on_delivery,
            flush_interval=c.flush_interval,
            max_queue_size=c.max_queue_size,
            max_queue_bytes=c.max_queue_bytes,
            block_on_full=c.block_on_full,
            max_retries=c.max_retries,
            # A request's answer may not keep close() waiting much past shutdown_timeout;
            # a timed-out request is retried (safe: unique_id), so this costs little.
            answer_timeout=min(c.timeout, max(c.shutdown_timeout, _MIN_ANSWER_TIMEOUT)),
            rate_store=self._rate_store,
            # A disabled client sends nothing, not even what another process left behind.
            outbox=None if c.outbox is None or c.disabled else Outbox(c.outbox),
            profile_jobs=self._revision.has(PROFILE_JOBS_OPERATION),
        )
        # A Client dropped without close() still sends what it queued (by exit at the
        # latest, within shutdown_timeout), then its thread ends.
        finalizer = weakref.finalize(self, self._worker.detach, c.shutdown_timeout)
        finalizer.atexit = False  # at exit, the lifecycle hook closes live clients instead

    # -- construction helpers ------------------------------------------------------------

    @classmethod
    def from_env(cls, **options: Unpack[ClientOptions]) -> Client:
        """Build a Client from KLAVIYO_PUBLIC_API_KEY, KLAVIYO_PRIVATE_API_KEY and
        optionally KLAVIYO_BASE_URL and KLAVIYO_REVISION; ``options`` are any other Client
        keyword, and win over the environment. KLAVIYO_SIGNAL_DISABLED is read by the
        Client itself (see ``disabled``), so it applies here too."""
        missing = [
            name
            for name in ("KLAVIYO_PUBLIC_API_KEY", "KLAVIYO_PRIVATE_API_KEY")
            if not os.environ.get(name)
        ]
        if missing:
            raise ConfigurationError(f"environment variable(s) not set: {', '.join(missing)}")
        if "pk_" in os.environ["KLAVIYO_PUBLIC_API_KEY"]:
            raise ConfigurationError(
                "KLAVIYO_PUBLIC_API_KEY looks like a private key (pk_***): it holds the "
                "6-character public key (Site ID) and KLAVIYO_PRIVATE_API_KEY the private key; "
                "swap the two values"
            )
        if os.environ.get("KLAVIYO_BASE_URL"):
            options.setdefault("base_url", os.environ["KLAVIYO_BASE_URL"])
        if os.environ.get("KLAVIYO_REVISION"):
            options.setdefault("revision", os.environ["KLAVIYO_REVISION"])
        return cls(
            os.environ["KLAVIYO_PUBLIC_API_KEY"], os.environ["KLAVIYO_PRIVATE_API_KEY"], **options
        )

    @classmethod
    def from_install(cls, payload: Mapping[str, Any], **options: Unpack[ClientOptions]) -> Client:
        """Build a Client from the integration-install JSON.

        Args:
            payload: ``{"name", "variant", "config": {"public_api_key", "private_api_key"},
                "delivery_mode": "server_side"}``.
            options: Any Client keyword; they win over the payload.
        """
        if not isinstance(payload, Mapping):
            raise ConfigurationError("install payload: expected a JSON object")
        config = payload.get("config")
        if not isinstance(config, Mapping):
            raise ConfigurationError("install payload: 'config' must be an object with the keys")
        for key in ("public_api_key", "private_api_key"):
            if not isinstance(config.get(key), str):
                raise ConfigurationError(f"install payload: config.{key} is missing")
        if "pk_" in config["public_api_key"]:
            raise ConfigurationError(
                "install payload: config.public_api_key looks like a private key (pk_***): it "
                "holds the 6-character public key (Site ID) and config.private_api_key the "
                "private key; swap the two values"
            )
        mode = payload.get("delivery_mode", "server_side")
        if mode != "server_side":
            raise ConfigurationError(
                f"install payload: delivery_mode {_shown(mode)} is not supported; this SDK "
                "delivers server_side"
            )
        variant = payload.get("variant", "default")
        if "blueprint" not in options:
            if not isinstance(variant, str) or "pk_" in variant:
                raise ConfigurationError(
                    f"install payload: variant must be a variant name, got {_shown(variant)}"
                )
            options["blueprint"] = blueprint_for_variant(variant)
        return cls(config["public_api_key"], config["private_api_key"], **options)

    def __repr__(self) -> str:
        # A Client whose __init__ failed (or a subclass before super().__init__) has no
        # config yet; a repr must never raise, or the error report that shows it fails too.
        c: Config | None = getattr(self, "_config", None)
        if c is None:
            return f"<{type(self).__name__} (not configured)>"
        mode = "sync" if c.sync_mode else "background"
        if c.disabled:
            mode += ", disabled"
        return (
            f"Client(public_api_key={c.public_api_key!r}, "
            f"private_api_key={mask(c.private_api_key)!r}, base_url={c.base_url!r}, mode={mode})"
        )

    # -- the calls -----------------------------------------------------------------------

    def identify(
        self,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> Delivery:
        """Create or update the Klaviyo profile of a user.

        Raises:
            ValidationError: The input breaks a rule (no identifier, bad phone or email...).
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        request = _current_context(None)
        if request is not None:
            user_id, anonymous_id, traits, consent = request.fill(
                user_id, anonymous_id, traits, consent, context
            )
        return self._call(
            build_message(
                "identify",
                reads=self._blueprint.reads("identify", None),
                user_id=user_id,
                traits=traits,
                anonymous_id=anonymous_id,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
                default_phone_region=self._config.default_phone_region,
            )
        )

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
        backfill: bool | None = None,
    ) -> Delivery:
        """Record an event; the blueprint decides its Klaviyo metric, or drops it.

        ``backfill=True`` records it without triggering flows (for historical events);
        None: the Client's ``backfill``.

        Raises:
            ValidationError: The input breaks a rule (no identifier, bad name, NaN...).
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        request = _current_context(None)
        checked = None  # a request context's consent, checked when the context was entered
        if request is not None:
            given = consent
            user_id, anonymous_id, traits, consent = request.fill(
                user_id, anonymous_id, traits, consent, context
            )
            if (
                given is None
                and context is None
                and consent is request.consent
                and consent_drop_reason(consent, require_consent=False) is None
            ):
                checked = consent
        if (
            context is None
            and (consent is None or consent is checked)
            and timestamp is None
            and message_id is None
            and backfill is None
            and self._quick_lane
        ):
            # The common call takes the fast lane; any other, and any the lane does not
            # recognise (bad input included), the full route below.
            plan = self._blueprint.quick(event)
            packed = (
                None
                if plan is None
                else quick_track(plan, properties, traits, user_id, anonymous_id, checked)
            )
            if packed is not None:
                return self._queued(*packed)
        flag = self._backfill(backfill)
        return self._call(
            build_message(
                "track",
                event=event,
                properties=properties,
                reads=self._blueprint.reads("track", event),
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
                default_phone_region=self._config.default_phone_region,
                max_properties=self._blueprint.max_properties,
            ),
            flag,
        )

    def page(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
        backfill: bool | None = None,
    ) -> Delivery:
        """Record a page view (metric ``page_view`` by default).

        ``backfill=True`` records it without triggering flows; None: the Client's
        ``backfill``.

        Raises:
            ValidationError: The input breaks a rule.
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        request = _current_context(None)
        if request is not None:
            user_id, anonymous_id, traits, consent = request.fill(
                user_id, anonymous_id, traits, consent, context
            )
        flag = self._backfill(backfill)
        return self._call(
            build_message(
                "page",
                name=name,
                properties=properties,
                reads=self._blueprint.reads("page", name),
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
                default_phone_region=self._config.default_phone_region,
                max_properties=self._blueprint.max_properties,
            ),
            flag,
        )

    def subscribe(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        list_id: str | None = None,
        channels: Iterable[str] | None = None,
        custom_source: str | None = None,
        consented_at: datetime | str | None = None,
        consent: Mapping[str, bool] | None = None,
        message_id: str | None = None,
    ) -> Delivery:
        """Record a profile's consent to marketing on a list (or the account's default).

        Args:
            email: The address to subscribe to email marketing.
            phone: The E.164 number (or a local one with ``default_phone_region``) for SMS.
            list_id: The Klaviyo list; None: the account's default opt-in setting applies.
            channels: Some of ``"email"``, ``"sms"``, ``"sms_transactional"``; default the
                marketing channels of the identifiers given.
            custom_source: Where the consent was collected (shown in Klaviyo).
            consented_at: When consent was given, for a historical import (not in future).
            consent: The caller's consent state; marketing denied refuses the call.
            message_id: The call's id, as on the Delivery.

        Raises:
            ValidationError: No identifier, a bad email or phone, an unknown or unusable
                channel, marketing consent denied, or ``consented_at`` in the future.
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        return self._subscription(
            "subscribe",
            email=email,
            phone=phone,
            list_id=list_id,
            channels=channels,
            custom_source=custom_source,
            consented_at=consented_at,
            consent=consent,
            message_id=message_id,
        )

    def unsubscribe(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        list_id: str | None = None,
        channels: Iterable[str] | None = None,
        message_id: str | None = None,
    ) -> Delivery:
        """Revoke a profile's marketing consent on a list (or on the account).

        Args:
            email: The address to unsubscribe from email marketing.
            phone: The number to unsubscribe from SMS.
            list_id: The Klaviyo list; None: the account-wide consent.
            channels: Some of ``"email"``, ``"sms"``, ``"sms_transactional"``; default the
                marketing channels of the identifiers given.
            message_id: The call's id, as on the Delivery.

        Raises:
            ValidationError: No identifier, a bad email or phone, or an unusable channel.
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        return self._subscription(
            "unsubscribe",
            email=email,
            phone=phone,
            list_id=list_id,
            channels=channels,
            message_id=message_id,
        )

    # -- pipeline ------------------------------------------------------------------------

    def _backfill(self, value: bool | None) -> bool:
        return call_backfill(value, self._config.backfill, self._revision)

    def _call(self, message: Message, backfill: bool = False) -> Delivery:
        # The call methods build the Message themselves: forwarding **kwargs through two
        # more frames cost the caller measurably on every call.
        config = self._config
        reason = consent_drop_reason(message.consent, require_consent=config.require_consent)
        if reason is not None:
            return self._dropped(message.message_id, reason)
        if config.sync_mode or backfill or config.disabled:
            # A backfill's events are built here: the worker's route for simple calls
            # carries no flags.
            decision = self._blueprint.decide(message)
        else:
            # Checked here; a simple call's event is built on the worker.
            prepared = self._blueprint.prepare(message)
            if type(prepared) is tuple:
                return self._queued(*prepared, named=True)
            decision = prepared  # type: ignore[assignment]
        if decision.drop_reason is not None:
            return self._dropped(message.message_id, decision.drop_reason)
        return self._deliver(message.message_id, with_backfill(decision.objects, backfill))

    def _subscription(self, action: Action, **fields: Any) -> Delivery:
        # A subscribe records consent itself, so require_consent does not gate it; an
        # explicit denial is refused by build_subscription.
        sub = build_subscription(
            action, default_phone_region=self._config.default_phone_region, **fields
        )
        return self._deliver(sub.message_id, (sub,))

    def _deliver(self, message_id: str, objects: Sequence[KlaviyoObject]) -> Delivery:
        """Send one accepted call's objects now (sync mode) or queue them (background)."""
        objects = self._revision.shape(objects)
        if self._config.disabled:
            encode_requests(objects)  # encoded and size-checked as sync mode would, not sent
            return self._dropped(message_id, _DISABLED)
        if self._config.sync_mode:
            return self._sync.send(message_id, objects)
        # Background: hand over the objects; the worker encodes them, off the caller's time.
        return self._taken(message_id, self._worker.submit(message_id, objects))

    def _dropped(self, message_id: str, reason: str) -> Delivery:
        """End a call ``dropped``: for ``reason``, or because the client is disabled."""
        if self._config.disabled:
            reason = _DISABLED
        return self._final(Delivery(message_id, DeliveryStatus.DROPPED, reason))

    def _queued(self, record: tuple[object, ...], size: int, named: bool = False) -> Delivery:
        """Queue a simple call's record: the fast lane's or ``CompiledBlueprint.prepare``'s."""
        message_id: str = record[_MESSAGE_ID]  # type: ignore[assignment]
        ticket = self._worker.submit_record(message_id, record, size, named)
        if type(ticket) is str:
            return self._final(Delivery(message_id, DeliveryStatus.DROPPED, ticket))
        return Delivery.queued(message_id, ticket)  # type: ignore[arg-type]

    def _taken(self, message_id: str, ticket: Ticket | str) -> Delivery:
        """Return a queued call's Delivery, or the dropped one when the queue refused it."""
        if isinstance(ticket, str):
            return self._final(Delivery(message_id, DeliveryStatus.DROPPED, ticket))
        return Delivery.queued(message_id, ticket)

    def _final(self, delivery: Delivery, error: BaseException | None = None) -> Delivery:
        key: str | None
        if delivery.status is DeliveryStatus.FAILED:
            key = failure_key(delivery.http_status, error)
        else:
            key = drop_key(delivery.reason)
        self._stats.outcome(delivery.status.value, key)
        callback = self._config.on_delivery
        if callback is not None:
            loop = running_loop()
            if loop is None:
                _call_back(callback, delivery)
            else:
                # Never on the event loop: a callback that blocks would stall every task.
                try:
                    loop.run_in_executor(None, _call_back, callback, delivery)
                except RuntimeError:  # the loop's executor is shut down: the loop is ending
                    _call_back(callback, delivery)
        return delivery

    # -- lifetime ------------------------------------------------------------------------

    def explain(self, kind: ExplainKind, *args: Any, **kwargs: Any) -> Explanation:
        """Return what a call with these arguments would send, without sending it.

        Inside a ``request_context``, identify, track and page take what the call leaves
        out from it, as the call itself would.

        Args:
            kind: ``"identify"``, ``"track"``, ``"page"``, ``"subscribe"`` or
                ``"unsubscribe"``.
            *args: The same positional arguments as that method.
            **kwargs: The same keyword arguments as that method.

        Raises:
            TypeError: The arguments do not fit that call.
            ValidationError: The input breaks a rule, exactly as the call would raise.
        """
        return explain(
            request=_current_context(None),
            blueprint=self._config.blueprint,
            require_consent=self._config.require_consent,
            default_phone_region=self._config.default_phone_region,
            revision=self._config.revision,
            strict_revision=self._config.strict_revision,
            public_api_key=self._config.public_api_key,
            backfill=self._config.backfill,
            kind=kind,
            args=args,
            kwargs=kwargs,
        )

    @property
    def revision(self) -> str:
        """The Klaviyo API revision this client sends, and whose rules its bodies follow."""
        return self._config.revision

    @property
    def stats(self) -> Stats:
        """A snapshot of the delivery counters (since the client was built or forked)."""
        worker = self._worker
        return self._stats.snapshot(queued=worker.pending, queue_bytes=worker.pending_bytes)

    def flush(self, timeout: float | None = None) -> bool:
        """Send every queued call now and wait until each is final.

        Returns:
            True when nothing is left queued; False if ``timeout`` seconds passed first
            (the calls stay queued and are sent later).
        """
        return self._worker.flush(timeout)

    def close(self) -> None:
        """Send what is queued (up to ``shutdown_timeout``), then stop the worker. Idempotent.

        Calls still unsent then end ``dropped`` (reason: shutdown), calls whose request got
        no answer in time end ``failed`` (Klaviyo may have them), and their count is logged.
        """
        # Marked as a close under way before the Client leaves the list: a signal's
        # handler that finds neither this Client nor a close under way ends the process.
        with closing():
            if self._closed:
                return
            self._closed = True
            forget(self)
            left = self._worker.close(self._config.shutdown_timeout)
        if left:
            log.warning(
                "klaviyo-signal: %d call(s) were not delivered within shutdown_timeout=%g s "
                "(see client.stats.dropped_by_reason and failed_by_reason)",
                left,
                self._config.shutdown_timeout,
            )
        self._sync.close()
        if self._rate_store is not None:
            self._rate_store.close()

    def _reset_after_fork(self) -> None:
        """In a forked child: start over with an empty queue, no thread, a new session."""
        if not self._closed:
            self._worker.forsake()
            self._fresh_state()

    def install_signal_handlers(self, signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        """Send what is queued when the process gets one of ``signals`` (default SIGTERM).

        ``docker stop``, Kubernetes, systemd and supervisord stop a process with SIGTERM,
        which Python's default ends without the exit hook, losing the queue. With this,
        every Client of the process flushes first (each within its ``shutdown_timeout``).
        A handler set before is chained to: it is called at once, and the clients flush
        but stay open (the application decides when it exits). Without one, the clients
        close and the signal is raised again with its default action, so the process
        ends as it would have (exit status 143, or -15 from ``subprocess``); a second
        signal during the flush ends it at once. Calling it again changes nothing.

        Args:
            signals: The signals to handle, e.g. ``(signal.SIGTERM, signal.SIGHUP)``.

        Raises:
            ConfigurationError: Not called on the main thread, or a signal that cannot
                be caught (SIGKILL, SIGSTOP).
        """
        install_signal_handlers(signals)

    def _drain(self) -> None:
        """Send what is queued, within shutdown_timeout, and stay open (a signal came)."""
        if not self._closed:
            self._worker.flush(self._config.shutdown_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- asyncio and short-lived processes -------------------------------------------------

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for coroutines: the event loop carries on while the worker sends.

        Returns:
            True when nothing is left queued; False if ``timeout`` seconds passed first.
            A cancelled ``aflush`` leaves the calls queued; with ``timeout=None`` its
            waiting thread ends only once the queue is empty, so prefer a timeout.
        """
        if self._worker.pending == 0 and self._worker.flush(0.0):
            return True  # nothing queued and no callback running: no thread needed
        return await off_loop(functools.partial(self.flush, timeout), "klaviyo-signal-aflush")

    async def aclose(self) -> None:
        """``close()`` for coroutines: sends what is queued (up to ``shutdown_timeout``)
        while the event loop carries on, then stops the worker. Idempotent."""
        if self._closed:
            return
        await off_loop(self.close, "klaviyo-signal-aclose")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aidentify(
        self,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> Delivery:
        """``identify()``, sent now, returning its final Delivery without blocking the loop.

        Raises:
            ValidationError: As ``identify`` (at once, before anything is queued).
            APIError, TransportError: sync mode only, as ``identify``.
        """
        return await self._now(
            functools.partial(
                self.identify,
                user_id,
                traits,
                anonymous_id=anonymous_id,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
            )
        )

    async def atrack(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
        backfill: bool | None = None,
    ) -> Delivery:
        """``track()``, sent now, returning its final Delivery without blocking the loop.

        In background mode the call is queued and its bulk job sent at once (as a flush
        would), instead of after ``flush_interval``; a failure is the Delivery's status.

        Raises:
            ValidationError: As ``track`` (at once, before anything is queued).
            APIError, TransportError: sync mode only, as ``track``.
        """
        return await self._now(
            functools.partial(
                self.track,
                event,
                properties,
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
                backfill=backfill,
            )
        )

    async def apage(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
        backfill: bool | None = None,
    ) -> Delivery:
        """``page()``, sent now, returning its final Delivery without blocking the loop.

        Raises:
            ValidationError: As ``page`` (at once, before anything is queued).
            APIError, TransportError: sync mode only, as ``page``.
        """
        return await self._now(
            functools.partial(
                self.page,
                name,
                properties,
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                context=context,
                consent=consent,
                timestamp=timestamp,
                message_id=message_id,
                backfill=backfill,
            )
        )

    async def _now(self, call: Callable[[], Delivery]) -> Delivery:
        """Make a call and await its final Delivery, never blocking the event loop."""
        c = self._config
        if (c.sync_mode or c.block_on_full) and not c.disabled:
            # The request itself (sync mode), or the wait for room, would block the loop.
            delivery = await off_loop(call, "klaviyo-signal-call")
        else:
            delivery = call()  # queueing never waits
        if delivery.status is DeliveryStatus.QUEUED:
            # Seal the jobs holding it now (returns at once): "send now", not in a second.
            self._worker.flush(0.0)
        return await delivery

    @overload
    def flush_after(self, fn: _F, /) -> _F: ...

    @overload
    def flush_after(self, fn: None = None, /, *, timeout: float = 2.0) -> Callable[[_F], _F]: ...

    def flush_after(self, fn: Callable[..., Any] | None = None, /, *, timeout: float = 2.0) -> Any:
        """Decorate a handler (sync or async) so each call flushes when it returns or raises.

        For units of work after which the process may freeze or stop: an AWS Lambda or
        Cloud Run handler, a Celery task, a script's ``main``. The flush waits at most
        ``timeout`` seconds; calls it leaves unsent are logged in one WARNING line and
        stay queued. The handler's return value and exceptions pass through unchanged.

        Args:
            fn: The handler, when used bare (``@client.flush_after``).
            timeout: The flush's budget in seconds.

        Raises:
            ConfigurationError: ``timeout`` is not a number above 0.
        """
        budget = checked_budget(timeout)
        unit_flushes()

        def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
            return flush_after(functools.partial(self._flushing, budget), handler)

        return decorate if fn is None else decorate(fn)

    def flushing(self, timeout: float = 2.0) -> AbstractContextManager[FlushReport]:
        """Flush when the ``with`` block ends (returns or raises), within ``timeout`` s.

        ``with client.flushing(2.0) as report:`` gives a FlushReport filled in when the
        block ends: ``flushed``, and ``left``, the calls still unsent (also logged in one
        WARNING line; they stay queued).

        Raises:
            ConfigurationError: ``timeout`` is not a number above 0.
        """
        budget = checked_budget(timeout)
        unit_flushes()
        return self._flushing(budget, "the flushing() block")

    def aflushing(self, timeout: float = 2.0) -> AbstractAsyncContextManager[FlushReport]:
        """``flushing()`` for coroutines (``async with``): the flush awaits ``aflush``.

        Raises:
            ConfigurationError: ``timeout`` is not a number above 0.
        """
        budget = checked_budget(timeout)
        unit_flushes()
        return self._flushing(budget, "the aflushing() block")

    def _flushing(self, timeout: float, what: str) -> Flushing:
        worker = self._worker
        return Flushing(self.flush, self.aflush, lambda: worker.pending, timeout, what)


def _call_back(callback: OnDelivery, delivery: Delivery) -> None:
    try:
        callback(delivery)
    except Exception:
        log.exception("klaviyo-signal: the on_delivery callback raised")


class _Borrowed:
    """The Client's given transport as the worker uses it: the sync side closes it, once."""

    def __init__(self, transport: Transport) -> None:
        self.handle: Callable[[HTTPRequest], HTTPResponse] = transport.handle

    def close(self) -> None:
        pass


def _transport(
    config: Config, *, max_retries: int, pool_size: int = 4, borrowed: bool = False
) -> KlaviyoAPI:
    """Build Klaviyo's API over the Client's transport, or a requests one; ``borrowed``:
    the worker's, which leaves a given transport for ``close()`` to close once."""
    transport: Transport
    if config.transport is None:
        transport = RequestsTransport(max_retries=max_retries, pool_size=pool_size)
    elif borrowed:
        transport = _Borrowed(config.transport)
    else:
        transport = config.transport
    return KlaviyoAPI(
        transport,
        base_url=config.base_url,
        public_api_key=config.public_api_key,
        private_api_key=config.private_api_key,
        revision=config.revision,
        strict_revision=config.strict_revision,
        timeout=config.timeout,
    )
