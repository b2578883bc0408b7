"""klaviyo-signal: send identify, track and page calls to Klaviyo, mapped by a blueprint."""

from __future__ import annotations

from ._blueprint import Blueprint, Rule, default_blueprint
from ._client import Client
from ._delivery import Delivery, DeliveryStatus
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ErrorRecord,
    KlaviyoSignalError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RevisionGoneError,
    ServerError,
    TransportError,
    ValidationError,
)
from ._messages import Message
from ._version import VERSION as __version__

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Blueprint",
    "Client",
    "ConfigurationError",
    "Delivery",
    "DeliveryStatus",
    "ErrorRecord",
    "KlaviyoSignalError",
    "Message",
    "NetworkError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RevisionGoneError",
    "Rule",
    "ServerError",
    "TransportError",
    "ValidationError",
    "__version__",
    "default_blueprint",
]
