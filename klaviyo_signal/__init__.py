"""klaviyo-signal: send identify, track and page calls to Klaviyo, mapped by a blueprint."""

from __future__ import annotations

from ._blueprint.blueprint import Blueprint, Rule, blueprint_for_variant, default_blueprint
from ._blueprint.rules import (
    CatchAll,
    IdentifyRule,
    ItemRule,
    Mapper,
    ProfileMap,
    PropertyMap,
    SubscribeRule,
)
from ._calls.context import RequestContext, current_context, request_context
from ._calls.message import Message
from ._client import Client
from ._delivery.delivery import Delivery, DeliveryStatus
from ._delivery.stats import Stats
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
from ._flushing import FlushReport
from ._klaviyo.revisions import DEFAULT_REVISION, SUPPORTED_REVISIONS
from ._klaviyo.transport import RequestsTransport
from ._version import VERSION as __version__

__all__ = [
    "DEFAULT_REVISION",
    "SUPPORTED_REVISIONS",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BlockedByEdgeError",
    "Blueprint",
    "BlueprintError",
    "CatchAll",
    "Client",
    "ConfigurationError",
    "Delivery",
    "DeliveryStatus",
    "ErrorRecord",
    "ExplainedRequest",
    "Explanation",
    "FlushReport",
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
    "RequestContext",
    "RequestTimeoutError",
    "RequestsTransport",
    "RevisionGoneError",
    "RevisionWarning",
    "Rule",
    "ServerError",
    "Stats",
    "SubscribeRule",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "__version__",
    "blueprint_for_variant",
    "current_context",
    "default_blueprint",
    "request_context",
]
