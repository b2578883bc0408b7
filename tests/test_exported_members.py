"""The public surface: exactly these names, from the package root and ``klaviyo_signal.typing``."""

from __future__ import annotations

import klaviyo_signal
import klaviyo_signal.testing
import klaviyo_signal.typing

ROOT = {
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
    "RequestsTransport",
    "RequestContext",
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
    "current_context",
    "default_blueprint",
    "request_context",
}


def test_the_root_exports_exactly_the_public_names() -> None:
    """klaviyo_signal.__all__ is exactly the documented set, each name importable."""
    assert set(klaviyo_signal.__all__) == ROOT
    assert len(klaviyo_signal.__all__) == len(ROOT)
    for name in ROOT:
        assert hasattr(klaviyo_signal, name), name
    public = {n for n in vars(klaviyo_signal) if n[0].isalpha()}
    # Besides __all__, only the subpackages and modules a user may import by path.
    assert public - ROOT <= {"typing", "testing", "integrations", "annotations"}


def test_typing_exports_the_aliases_and_protocols() -> None:
    """klaviyo_signal.typing holds JSON, Mapper, OnDelivery and the transport seam's types."""
    assert set(klaviyo_signal.typing.__all__) == {
        "JSON",
        "ClientOptions",
        "HTTPRequest",
        "HTTPResponse",
        "Mapper",
        "OnDelivery",
        "Transport",
    }
    assert klaviyo_signal.typing.Mapper is klaviyo_signal.Mapper


def test_testing_exports_the_fake() -> None:
    """klaviyo_signal.testing exports the fake and the records it keeps."""
    assert set(klaviyo_signal.testing.__all__) == {
        "FakeEvent",
        "FakeImportJob",
        "FakeKlaviyo",
        "FakeProfile",
        "FakeRequest",
    }


def test_client_options_name_every_keyword_of_client() -> None:
    """ClientOptions (from_env's and from_install's **options) lists exactly Client's options."""
    import inspect
    import typing

    keywords = {
        name
        for name, parameter in inspect.signature(klaviyo_signal.Client).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(typing.get_type_hints(klaviyo_signal.typing.ClientOptions)) == keywords
