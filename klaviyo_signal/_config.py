"""Client options, checked once when the Client is built.

A wrong key or option fails here with ``ConfigurationError``, never later on a worker
thread. The private key is kept out of every repr.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from ._blueprint.blueprint import Blueprint, default_blueprint
from ._delivery.delivery import Delivery
from ._delivery.ratelimit import published_limits
from ._delivery.ratestore import check_store_url, shown_url
from ._errors import ConfigurationError, mask
from ._errors import shown as _shown
from ._klaviyo.revisions import no_backfill, revision
from ._klaviyo.transport import Transport

__all__ = ["DISABLED_VARIABLE", "PUBLISHED", "Config", "disabled_by_env", "mask"]

PUBLISHED: Literal["published"] = "published"
"""The ``rate_limits`` default: Klaviyo's published limit for each endpoint."""

DISABLED_VARIABLE = "KLAVIYO_SIGNAL_DISABLED"
"""The environment variable that switches every Client that does not say ``disabled=``."""

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})

_PUBLIC_KEY = re.compile(r"^[A-Za-z0-9]{6}$")
# Printable ASCII without spaces: anything else cannot go in an HTTP header, and requests
# would then quote the whole header (the key) in its error.
_PRIVATE_KEY_CHARS = re.compile(r"[\x21-\x7e]+\Z")
_REGION = re.compile(r"^[A-Z]{2}$")
_LOOPBACK_NAMES = frozenset({"localhost"})


def disabled_by_env() -> bool:
    """Read ``KLAVIYO_SIGNAL_DISABLED``: 1/true/yes/on, or 0/false/no/off (or unset).

    Raises:
        ConfigurationError: Any other value (a typo must not send from staging).
    """
    value = os.environ.get(DISABLED_VARIABLE, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigurationError(
        f"{DISABLED_VARIABLE}: expected 1, true, yes or on (or 0, false, no, off), got "
        f"{_shown(os.environ[DISABLED_VARIABLE])}"
    )


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_public_key(_: object, __: attrs.Attribute[str], value: str) -> None:
    if isinstance(value, str) and "pk_" in value:
        raise ConfigurationError(
            "public_api_key: looks like a private key (pk_***): pass the public key (Site ID) "
            "first and the private key second, Client(public_api_key, private_api_key)"
        )
    if not isinstance(value, str) or not _PUBLIC_KEY.match(value):
        raise ConfigurationError(
            f"public_api_key: {_shown(value)} is not a Klaviyo public key (Site ID): it is 6 "
            "letters or digits, shown in Account > Settings > API Keys"
        )


def _check_private_key(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.startswith("pk_") or len(value) < 8:
        hint = ""
        if isinstance(value, str) and _PUBLIC_KEY.match(value):
            hint = " It looks like the public key (Site ID): pass the private key second."
        raise ConfigurationError(
            "private_api_key: not a Klaviyo private API key; private keys start with 'pk_' "
            f"(Account > Settings > API Keys > Create Private API Key).{hint}"
        )
    if not _PRIVATE_KEY_CHARS.match(value):
        raise ConfigurationError(
            "private_api_key: contains whitespace or control characters (a trailing newline "
            "from a file or an environment variable?); strip it before passing it"
        )


def _check_base_url(_: object, __: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.hostname or parts.scheme not in ("https", "http"):
        raise ConfigurationError(f"base_url: {_shown(value)} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url: {_shown(value)} uses plain http; the private key must travel over https "
            "(plain http is allowed only for loopback test servers such as 127.0.0.1)"
        )


def _check_revision(_: object, __: attrs.Attribute[str], value: str) -> None:
    revision(value)  # raises ConfigurationError naming the supported revisions


def _check_region(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not _REGION.match(value)):
        raise ConfigurationError(
            f"default_phone_region: {_shown(value)} is not a two-letter ISO 3166 region such as "
            "'GB'"
        )


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{attribute.name}: must be a number above 0, got {_shown(value)}")


def _count(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{attribute.name}: must be a whole number >= 0, got {_shown(value)}"
        )


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{attribute.name}: must be a whole number >= 1, got {_shown(value)}"
        )


def _bool(_: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name}: must be True or False, got {_shown(value)}")


def _rate_limits(value: object, revision_name: str) -> dict[str, tuple[int, int]] | None:
    """Resolve ``rate_limits``: the revision's published limits, overridden per endpoint, or
    None."""
    if value is None:
        return None
    limits = published_limits(revision_name)
    if isinstance(value, str) and value == PUBLISHED:
        return limits
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "rate_limits: expected a mapping such as "
            "{'POST /api/event-bulk-create-jobs': (10, 150)}, 'published' or None, "
            f"got {_shown(value)}"
        )
    for endpoint, pair in value.items():
        if not isinstance(endpoint, str) or not endpoint.startswith("POST /"):
            raise ConfigurationError(
                f"rate_limits: key {_shown(endpoint)} is not an endpoint such as "
                "'POST /api/event-bulk-create-jobs'"
            )
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in pair)
        ):
            raise ConfigurationError(
                f"rate_limits[{_shown(endpoint)}]: expected (burst per second, steady per "
                f"minute), two whole numbers >= 1, got {_shown(pair)}"
            )
        burst, steady = pair
        limits[endpoint] = (burst, steady)
    return limits


def _check_rate_limit_store(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    check_store_url(value)


def _callable_or_none(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            f"{attribute.name}: must be a function or None, got {_shown(value)}"
        )


def _check_transport(_: object, __: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (
        callable(getattr(value, "handle", None)) and callable(getattr(value, "close", None))
    ):
        raise ConfigurationError(
            f"transport: expected a klaviyo_signal.typing.Transport (an object with "
            f"handle(request) and close()), or None, got {type(value).__name__}"
        )


def _outbox(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"outbox: expected the path of a SQLite file (str or os.PathLike) or None, "
            f"got {_shown(value)}"
        )
    if isinstance(value, str) and value in ("", ":memory:"):
        raise ConfigurationError(
            f"outbox: {value!r} is not a file; the outbox must outlive the process"
        )


def _blueprint(value: Blueprint | None) -> Blueprint:
    if value is None:
        return default_blueprint()
    if not isinstance(value, Blueprint):
        raise ConfigurationError(
            f"blueprint: expected a klaviyo_signal.Blueprint, got {type(value).__name__}"
        )
    return value


@attrs.frozen(kw_only=True)
class Config:
    """Every Client option, validated; the defaults are written once, in ``Client``."""

    public_api_key: str = attrs.field(validator=_check_public_key)
    private_api_key: str = attrs.field(validator=_check_private_key, repr=mask)
    base_url: str = attrs.field(validator=_check_base_url)
    revision: str = attrs.field(validator=_check_revision)
    sync_mode: bool
    blueprint: Blueprint = attrs.field(converter=_blueprint)
    require_consent: bool
    default_phone_region: str | None = attrs.field(validator=_check_region)
    max_retries: int = attrs.field(validator=_count)
    timeout: float = attrs.field(validator=_positive)
    on_delivery: Callable[[Delivery], object] | None = attrs.field(validator=_callable_or_none)
    max_queue_size: int = attrs.field(validator=_at_least_one)
    shutdown_timeout: float = attrs.field(validator=_positive)
    flush_interval: float = attrs.field(validator=_positive)
    max_queue_bytes: int = attrs.field(validator=_at_least_one)
    block_on_full: bool = attrs.field(validator=_bool)
    # Given as the Client's ``rate_limits`` argument; resolved against the revision's
    # published limits once every field is checked.
    rate_limits: dict[str, tuple[int, int]] | None = attrs.field()
    strict_revision: bool = attrs.field(validator=_bool)
    backfill: bool = attrs.field(validator=_bool)
    transport: Transport | None = attrs.field(validator=_check_transport)
    disabled: bool = attrs.field(validator=_bool)
    rate_limit_store: str | None = attrs.field(validator=_check_rate_limit_store, repr=shown_url)
    outbox: str | os.PathLike[str] | None = attrs.field(validator=_outbox)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "rate_limits", _rate_limits(self.rate_limits, self.revision))
        if self.rate_limit_store is not None and self.sync_mode:
            raise ConfigurationError(
                "rate_limit_store: paces the background worker's requests; with "
                "sync_mode=True each call is sent at once and nothing would use the store "
                "(drop one of the two)"
            )
        if self.backfill and not revision(self.revision).backfill:
            raise ConfigurationError(no_backfill(self.revision))
        if self.outbox is not None and self.sync_mode:
            raise ConfigurationError(
                "outbox: sync_mode sends each call before it returns, so nothing waits in an "
                "outbox; pass one or the other"
            )
