"""Sync mode: each call's requests sent on the caller's thread, one after the other.

The other strategy is background mode (``_delivery/worker.py``), which queues and
batches. Here every object becomes the one request it is when sent alone
(``_klaviyo.wire.request``); a subscription goes as a job of one, so the call's outcome
is its own. Retries are the transport's (urllib3's, for the default requests transport).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._errors import APIError, TransportError
from .._klaviyo.json import request_too_large
from .._klaviyo.limits import MAX_EVENT_REQUEST_BYTES, MAX_PROFILE_IMPORT_BYTES
from .._klaviyo.models import Event, KlaviyoObject, Profile
from .._klaviyo.transport import KlaviyoAPI
from .._klaviyo.wire import request
from .delivery import Delivery, DeliveryStatus
from .stats import Counters

__all__ = ["SyncDelivery", "encode_requests"]


def encode_requests(objects: Sequence[KlaviyoObject]) -> tuple[tuple[str, bytes], ...]:
    """Return the (path, body) of each object's request, in order.

    Raises:
        ValidationError: A request is larger than Klaviyo takes.
    """
    return tuple(_fits(obj) for obj in objects)


def _fits(obj: KlaviyoObject) -> tuple[str, bytes]:
    path, body = request(obj)
    if isinstance(obj, Event) and len(body) > MAX_EVENT_REQUEST_BYTES:
        raise request_too_large(len(body), MAX_EVENT_REQUEST_BYTES, "the event")
    if isinstance(obj, Profile) and len(body) > MAX_PROFILE_IMPORT_BYTES:
        raise request_too_large(len(body), MAX_PROFILE_IMPORT_BYTES, "the profile import")
    return path, body


class SyncDelivery:
    """Sends a call now and returns its final Delivery; raises its typed error on failure.

    Args:
        api: Klaviyo's API over the client's transport (with its retries).
        stats: The counters to update.
        final: Records a final Delivery (stats and ``on_delivery``) and returns it.
    """

    def __init__(
        self,
        api: KlaviyoAPI,
        stats: Counters,
        final: Callable[[Delivery, BaseException | None], Delivery],
    ) -> None:
        self._api = api
        self._stats = stats
        self._final = final

    def send(self, message_id: str, objects: Sequence[KlaviyoObject]) -> Delivery:
        """Send ``objects``' requests in order; the first that fails ends the call.

        Raises:
            ValidationError: A request is larger than Klaviyo takes (nothing was sent).
            APIError, TransportError: Klaviyo did not accept a request.
        """
        delivery, error = self._send(message_id, encode_requests(objects))
        self._final(delivery, error)
        if error is not None:
            raise error
        return delivery

    def _send(
        self, message_id: str, requests: Sequence[tuple[str, bytes]]
    ) -> tuple[Delivery, Exception | None]:
        status: int | None = None
        for path, body in requests:
            try:
                answer = self._api.post(path, body)
            except APIError as exc:
                return Delivery(message_id, DeliveryStatus.FAILED, str(exc), exc.status), exc
            except TransportError as exc:
                return Delivery(message_id, DeliveryStatus.FAILED, str(exc)), exc
            except Exception as exc:  # a user's transport broke: the call still ends once
                reason = f"internal error: the transport raised {type(exc).__name__}"
                return Delivery(message_id, DeliveryStatus.FAILED, reason), exc
            self._stats.request(len(body), retries=answer.retries)
            status = answer.status
        return Delivery(message_id, DeliveryStatus.DELIVERED, None, status), None

    def close(self) -> None:
        """Close the transport's connections."""
        self._api.close()
