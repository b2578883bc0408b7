"""klaviyo-signal: send identify, track and page calls to Klaviyo, mapped by a blueprint."""

from __future__ import annotations

from ._blueprint import Blueprint, Rule, blueprint_for_variant, default_blueprint
from ._client import Client
from ._delivery import Delivery, DeliveryStatus
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BlockedByEdgeError,
    BlueprintError,
    ConfigurationError,
    ErrorRecord,
    KlaviyoSignalError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RevisionGoneError,
    RevisionWarning,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from ._explain import ExplainedRequest, Explanation
from ._messages import Message
from ._revisions import DEFAULT_REVISION, SUPPORTED_REVISIONS
from ._rules import (
    CatchAll,
    IdentifyRule,
    ItemRule,
    Mapper,
    ProfileMap,
    PropertyMap,
    SubscribeRule,
)
from ._stats import Stats
from ._version import VERSION as __version__

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BlockedByEdgeError",
    "Blueprint",
    "BlueprintError",
    "CatchAll",
    "Client",
    "ConfigurationError",
    "DEFAULT_REVISION",
    "Delivery",
    "DeliveryStatus",
    "ErrorRecord",
    "ExplainedRequest",
    "Explanation",
    "IdentifyRule",
    "ItemRule",
    "KlaviyoSignalError",
    "Mapper",
    "Message",
    "NetworkError",
    "PermissionDeniedError",
    "ProfileMap",
    "PropertyMap",
    "RateLimitError",
    "RequestTimeoutError",
    "RevisionGoneError",
    "RevisionWarning",
    "Rule",
    "SUPPORTED_REVISIONS",
    "ServerError",
    "Stats",
    "SubscribeRule",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "__version__",
    "blueprint_for_variant",
    "default_blueprint",
]
