"""Public type aliases and Protocols, for annotating code that uses klaviyo-signal.

``JSON`` is a value klaviyo-signal can send (after cleaning); ``Mapper`` is the signature of
a blueprint's custom mapping function; ``OnDelivery`` is the ``on_delivery`` callback;
``Transport`` is what ``Client(transport=...)`` takes, sending an ``HTTPRequest`` and
returning an ``HTTPResponse``; ``ClientOptions`` types the keyword options of
``Client.from_env`` and ``Client.from_install``.
"""

from __future__ import annotations

from ._blueprint.rules import Mapper
from ._client import ClientOptions
from ._delivery.delivery import OnDelivery
from ._klaviyo.json import JSON
from ._klaviyo.transport import HTTPRequest, HTTPResponse, Transport

__all__ = [
    "JSON",
    "ClientOptions",
    "HTTPRequest",
    "HTTPResponse",
    "Mapper",
    "OnDelivery",
    "Transport",
]
