"""The Client facade: wires the pipeline stages and owns their lifetime.

A call flows one way: input -> Message (cleaned, validated) -> consent gate -> blueprint
-> Klaviyo objects -> wire bytes -> sent now (sync mode) or queued (background mode).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from ._blueprint import Blueprint, default_blueprint
from ._config import Config, mask
from ._consent import consent_drop_reason
from ._delivery import Delivery, DeliveryStatus, Job, OnDelivery, Ticket, send_job
from ._errors import ConfigurationError
from ._messages import Kind, Message, build_message
from ._models import Event, Profile
from ._transport import Transport
from ._wire import encode, event_body, profile_body
from ._worker import Worker

__all__ = ["Client"]

log = logging.getLogger("klaviyo_signal")


def _request(obj: Event | Profile) -> tuple[str, bytes]:
    if isinstance(obj, Event):
        return "/api/events", encode(event_body(obj))
    return "/api/profile-import", encode(profile_body(obj))


class Client:
    """Sends identify, track and page calls to Klaviyo.

    Build one per process and share it: it is thread-safe. In background mode (the
    default) calls return at once and a worker thread sends; ``sync_mode=True`` sends
    before each call returns and raises on failure, for scripts and notebooks.

    Args:
        public_api_key: The account's 6-character public key (Site ID).
        private_api_key: A private API key (``pk_...``) with events:write and profiles:write.
        base_url: Klaviyo's API root; plain http only for loopback test servers.
        revision: The Klaviyo API revision sent on every request.
        sync_mode: Send before returning, and raise typed errors on failure.
        blueprint: The mapping onto Klaviyo's objects; default: ``default_blueprint()``.
        require_consent: Drop calls that carry no marketing consent grant.
        default_phone_region: Region (``"GB"``) for local phone numbers (``phone`` extra).
        max_retries: Retries on 429 and 5xx (Retry-After honoured) and connection errors.
        timeout: Read timeout in seconds for each request.
        on_delivery: Called with the final Delivery of every call.
        max_queue_size: Background mode: calls queued before new ones are dropped.
        shutdown_timeout: Seconds the exit hook waits for queued calls to be sent.

    Raises:
        ConfigurationError: A key or option is invalid.
    """

    def __init__(
        self,
        public_api_key: str,
        private_api_key: str,
        *,
        base_url: str = "https://a.klaviyo.com",
        revision: str = "2024-10-15",
        sync_mode: bool = False,
        blueprint: Blueprint | None = None,
        require_consent: bool = False,
        default_phone_region: str | None = None,
        max_retries: int = 5,
        timeout: float = 10.0,
        on_delivery: OnDelivery | None = None,
        max_queue_size: int = 10_000,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._config = Config(
            public_api_key,
            private_api_key,
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
        )
        self._transport = Transport(
            base_url=base_url,
            private_api_key=private_api_key,
            revision=revision,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._signal = threading.Condition()
        self._worker = Worker(self._send_queued, max_queue_size=max_queue_size)
        self._closed = False
        self._exit_hook = _exit_hook(weakref.ref(self))
        atexit.register(self._exit_hook)

    # -- construction helpers ------------------------------------------------------------

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """Build a Client from KLAVIYO_PUBLIC_API_KEY, KLAVIYO_PRIVATE_API_KEY and
        optionally KLAVIYO_BASE_URL; ``options`` are any other Client keyword."""
        missing = [
            name
            for name in ("KLAVIYO_PUBLIC_API_KEY", "KLAVIYO_PRIVATE_API_KEY")
            if not os.environ.get(name)
        ]
        if missing:
            raise ConfigurationError(f"environment variable(s) not set: {', '.join(missing)}")
        if os.environ.get("KLAVIYO_BASE_URL"):
            options.setdefault("base_url", os.environ["KLAVIYO_BASE_URL"])
        return cls(
            os.environ["KLAVIYO_PUBLIC_API_KEY"], os.environ["KLAVIYO_PRIVATE_API_KEY"], **options
        )

    @classmethod
    def from_install(cls, payload: Mapping[str, Any], **options: Any) -> Client:
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
        mode = payload.get("delivery_mode", "server_side")
        if mode != "server_side":
            raise ConfigurationError(
                f"install payload: delivery_mode {mode!r} is not supported; this SDK delivers "
                "server_side"
            )
        variant = payload.get("variant", "default")
        if "blueprint" not in options:
            options["blueprint"] = _variant(variant)
        return cls(config["public_api_key"], config["private_api_key"], **options)

    def __repr__(self) -> str:
        c = self._config
        mode = "sync" if c.sync_mode else "background"
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
        return self._call(
            "identify",
            user_id=user_id,
            traits=traits,
            anonymous_id=anonymous_id,
            context=context,
            consent=consent,
            timestamp=timestamp,
            message_id=message_id,
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
    ) -> Delivery:
        """Record an event; the blueprint decides its Klaviyo metric, or drops it.

        Raises:
            ValidationError: The input breaks a rule (no identifier, bad name, NaN...).
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        return self._call(
            "track",
            event=event,
            properties=properties,
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits=traits,
            context=context,
            consent=consent,
            timestamp=timestamp,
            message_id=message_id,
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
    ) -> Delivery:
        """Record a page view (metric ``page_view`` by default).

        Raises:
            ValidationError: The input breaks a rule.
            APIError, TransportError: sync mode only, when Klaviyo does not accept it.
        """
        return self._call(
            "page",
            name=name,
            properties=properties,
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits=traits,
            context=context,
            consent=consent,
            timestamp=timestamp,
            message_id=message_id,
        )

    # -- pipeline ------------------------------------------------------------------------

    def _message(self, kind: Kind, **fields: Any) -> Message:
        return build_message(kind, default_phone_region=self._config.default_phone_region, **fields)

    def _call(self, kind: Kind, **fields: Any) -> Delivery:
        message = self._message(kind, **fields)
        reason = consent_drop_reason(message.consent, require_consent=self._config.require_consent)
        decision = None
        if reason is None:
            decision = self._config.blueprint.decide(message)
            reason = decision.drop_reason
        if reason is not None or decision is None:
            return self._final(Delivery(message.message_id, DeliveryStatus.DROPPED, reason))
        job = Job(message.message_id, tuple(_request(obj) for obj in decision.objects))
        if self._config.sync_mode:
            return self._send_now(job)
        if self._closed:
            return self._final(
                Delivery(message.message_id, DeliveryStatus.DROPPED, "client is closed")
            )
        ticket = Ticket(self._signal)
        if not self._worker.submit(Job(job.message_id, job.requests, ticket)):
            return self._final(Delivery(message.message_id, DeliveryStatus.DROPPED, "queue full"))
        return Delivery(message.message_id, DeliveryStatus.QUEUED, ticket=ticket)

    def _post(self, path: str, body: bytes) -> int:
        return self._transport.post(path, body).status

    def _send_now(self, job: Job) -> Delivery:
        delivery, error = send_job(self._post, job)
        self._final(delivery)
        if error is not None:
            raise error
        return delivery

    def _send_queued(self, job: Job) -> None:
        delivery, error = send_job(self._post, job)
        if error is not None:
            log.warning("klaviyo-signal: a call failed: %s", error)
        if job.ticket is not None:
            job.ticket.resolve(delivery)
        self._final(delivery)

    def _final(self, delivery: Delivery) -> Delivery:
        callback = self._config.on_delivery
        if callback is not None:
            try:
                callback(delivery)
            except Exception:
                log.exception("klaviyo-signal: the on_delivery callback raised")
        return delivery

    # -- lifetime ------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued call is sent; return False if ``timeout`` passed first."""
        return self._worker.flush(timeout)

    def close(self) -> None:
        """Send what is queued (up to ``shutdown_timeout``), then stop the worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._exit_hook)
        if not self._worker.close(self._config.shutdown_timeout):
            log.warning(
                "klaviyo-signal: %d queued call(s) were not sent before close()",
                self._worker.pending(),
            )
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _exit_hook(ref: weakref.ref[Client]) -> Any:
    def hook() -> None:
        client = ref()
        if client is not None:
            client.close()

    return hook


def _variant(variant: object) -> Blueprint:
    if variant == "default":
        return default_blueprint()
    raise ConfigurationError(f"install payload: unknown variant {variant!r}; known: 'default'")
