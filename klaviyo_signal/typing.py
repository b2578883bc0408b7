"""Public type aliases and Protocols, for annotating code that uses klaviyo-signal.

``JSON`` is a value klaviyo-signal can send (after cleaning); ``Mapper`` is the signature of
a blueprint's custom mapping function; ``OnDelivery`` is the ``on_delivery`` callback.
"""

from __future__ import annotations

from ._blueprint.rules import Mapper
from ._delivery.delivery import OnDelivery
from ._klaviyo.json import JSON

__all__ = ["JSON", "Mapper", "OnDelivery"]
