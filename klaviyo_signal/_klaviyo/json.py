"""The ``JSON`` alias, and cleaning of caller values into it within Klaviyo's limits.

Cleaning happens once, at call time, so that a bad value fails on the caller's line with
the key path that holds it, instead of as a 400 from Klaviyo later on a worker thread.
Types JSON cannot carry are converted by documented rules (see ``clean_value``); anything
else is an error: nothing is dropped without a word.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import TypeAlias
from uuid import UUID

from .._errors import ValidationError
from .limits import (
    MAX_ARRAY_ITEMS,
    MAX_DEPTH,
    MAX_EVENT_REQUEST_BYTES,
    MAX_PROFILE_IMPORT_BYTES,
    MAX_STRING_BYTES,
)

__all__ = [
    "BYTES_PER_VALUE",
    "JSON",
    "MEASURE_ABOVE",
    "SAFE_STR_CHARS",
    "check_key",
    "check_str",
    "clean_properties",
    "clean_value",
    "dumps",
    "dumps_text",
    "estimate",
    "finish",
    "plain_size",
    "pretty",
    "request_too_large",
    "utf8_size",
]

# Decimal is kept (not turned into float) until dumps() writes the bytes: money stays exact.
JSON: TypeAlias = bool | int | float | str | Decimal | list["JSON"] | dict[str, "JSON"] | None

# What one cleaned value counts for against max_queue_bytes, besides its text
# (``estimate`` and ``plain_size``: the queue's guess at a call's memory).
BYTES_PER_VALUE = 64
# No cleaned value is written as more than BYTES_PER_VALUE times what the size estimate
# counts for it (a 4000-digit number counts BYTES_PER_VALUE; a character escapes to at most
# 6 bytes), so only a call estimated above this can be too large for a request: only those
# are measured exactly, and the common call pays one comparison.
MEASURE_ABOVE = min(MAX_EVENT_REQUEST_BYTES, MAX_PROFILE_IMPORT_BYTES) // BYTES_PER_VALUE
# A str of at most this many characters cannot exceed MAX_STRING_BYTES (UTF-8 is <= 4 bytes
# per character), so only longer ones pay for an encode.
SAFE_STR_CHARS = MAX_STRING_BYTES // 4
# Python refuses to write ints of more than ~4300 digits (sys.int_info.str_digits_check_threshold
# applies to json too); reject them here rather than fail in dumps() on a worker thread.
_MAX_DIGITS = 4000
_MAX_INT = 10**_MAX_DIGITS
_isfinite = math.isfinite
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def request_too_large(size: int, limit: int, what: str) -> ValidationError:
    """The error for one call whose request (``size`` bytes, with its envelope) cannot fit."""
    return ValidationError(
        f"properties: {what} takes {size} bytes as JSON, and Klaviyo accepts at most {limit} "
        "bytes per request; one call must fit one request alone, so send fewer or smaller "
        "properties (or traits)"
    )


def _key_path(path: str, key: str) -> str:
    """Return the path of ``key`` inside ``path``: ``a.b`` for plain keys, ``a['b c']`` else."""
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _type_name(value: object) -> str:
    return type(value).__qualname__


def utf8_size(value: str) -> int | None:
    """Return the UTF-8 size of ``value``, or None if a lone surrogate makes it unsendable."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def check_str(value: str, path: str, *, what: str = "the string") -> str:
    """Return ``value`` as a plain str if it is valid UTF-8 and within the 100 kB limit.

    Every string a call can carry (names, keys, values, blueprint text) passes this one
    check, so no lone surrogate reaches the encoder on a worker thread.
    """
    size = utf8_size(value)
    if size is None:
        raise ValidationError(
            f"{path}: {what} contains a lone surrogate (e.g. from a bad decode) "
            "and is not valid Unicode; it cannot be sent as UTF-8 JSON"
        )
    if size > MAX_STRING_BYTES:
        raise ValidationError(
            f"{path}: {what} is {size} bytes in UTF-8, over Klaviyo's limit of "
            f"{MAX_STRING_BYTES} bytes (100 kB) per string"
        )
    return str.__str__(value)


def check_key(key: object, path: str) -> str:
    """Return a mapping's key as a plain str; raise ValidationError naming ``path``."""
    if type(key) is not str and not isinstance(key, str):
        raise ValidationError(
            f"{path}: key {key!r} is of type {_type_name(key)}; keys must be strings"
        )
    if type(key) is str and key.isascii() and len(key) <= SAFE_STR_CHARS:
        return key
    return check_str(key, path, what=f"key {key!r}")


def plain_size(item: object) -> int:
    """Return what a value JSON carries as it is counts towards a queued call's size
    (``estimate``), or -1 if it is not such a value.

    The one test of a plain value: an ASCII str short enough to need no UTF-8 check, an
    int Python can write, a finite float, a bool or None. The full route's cleaning keeps
    these as they are without a closer look, and the caller's fast lane
    (``_blueprint/quick.py``) takes a call only if every value it reads passes.
    """
    kind = type(item)
    if kind is str:
        if len(item) <= SAFE_STR_CHARS and item.isascii():  # type: ignore[arg-type,attr-defined]
            return BYTES_PER_VALUE + len(item)  # type: ignore[arg-type]
        return -1
    if (
        (kind is int and -_MAX_INT < item < _MAX_INT)
        or (kind is float and _isfinite(item))  # type: ignore[arg-type]
        or item is None
        or kind is bool
    ):
        return BYTES_PER_VALUE
    return -1


def estimate(value: object) -> int:
    """Roughly the bytes a cleaned JSON value holds, for ``max_queue_bytes``: strings by
    length, other values flat (``BYTES_PER_VALUE``), a key by its length."""
    if type(value) is str:
        return BYTES_PER_VALUE + len(value)
    size = BYTES_PER_VALUE
    if type(value) is dict or type(value) is MappingProxyType or isinstance(value, Mapping):
        for key, item in value.items():
            counted = plain_size(item)
            size += len(key) + (counted if counted >= 0 else estimate(item))
    elif type(value) is list:
        for item in value:
            counted = plain_size(item)
            size += counted if counted >= 0 else estimate(item)
    return size


def _clean_mapping(value: Mapping[object, object], path: str, level: int) -> dict[str, JSON]:
    if level > MAX_DEPTH:
        raise ValidationError(
            f"{path}: nested {level} levels deep, over Klaviyo's limit of {MAX_DEPTH} "
            "(every object or array counts as a level; the properties object is level 1)"
        )
    out: dict[str, JSON] = {}
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            key = check_key(key, path)  # noqa: PLW2901 - a str subclass becomes a plain str
        if plain_size(item) >= 0:
            out[key] = item  # type: ignore[assignment]
        elif type(item) is dict:
            out[key] = _clean_mapping(item, _key_path(path, key), level + 1)
        elif type(item) is list:
            out[key] = _clean_sequence(item, _key_path(path, key), level + 1)
        else:
            out[key] = clean_value(item, _key_path(path, key), depth=level)
    return out


def _clean_sequence(value: list[object] | tuple[object, ...], path: str, level: int) -> list[JSON]:
    if level > MAX_DEPTH:
        raise ValidationError(
            f"{path}: nested {level} levels deep, over Klaviyo's limit of {MAX_DEPTH} "
            "(every object or array counts as a level; the properties object is level 1)"
        )
    if len(value) > MAX_ARRAY_ITEMS:
        raise ValidationError(
            f"{path}: the array has {len(value)} items, over Klaviyo's limit of "
            f"{MAX_ARRAY_ITEMS} items per array"
        )
    out: list[JSON] = []
    for i, item in enumerate(value):
        # The common values and objects skip building the item's path and the type chain.
        if plain_size(item) >= 0:
            out.append(item)  # type: ignore[arg-type]
        elif type(item) is dict:
            out.append(_clean_mapping(item, f"{path}[{i}]", level + 1))
        else:
            out.append(clean_value(item, f"{path}[{i}]", depth=level))
    return out


def clean_value(value: object, path: str, *, depth: int = 0) -> JSON:
    """Return ``value`` as JSON, converting the types JSON cannot carry.

    Conversions: ``datetime`` -> ISO 8601 string (a naive one is taken as UTC and written
    with ``+00:00``; an aware one keeps its offset), ``date`` -> ``YYYY-MM-DD``, ``UUID`` ->
    str, ``Enum`` -> its cleaned ``.value``, tuple -> list, set/frozenset -> list (sorted
    when the cleaned items sort, else in iteration order), any ``Mapping`` with str keys ->
    dict, and subclasses of str/int/float -> the plain type. ``Decimal`` stays a Decimal.

    Args:
        value: What the caller passed.
        path: Its key path, for error messages (``properties.items[2].price``).
        depth: How many objects/arrays enclose ``value``. An object or array found here is
            at level ``depth + 1``; Klaviyo accepts up to level 10, with the properties
            object itself at level 1 (so ``clean_properties`` cleans its values at depth 1).

    Raises:
        ValidationError: NaN or infinite numbers, non-str keys, strings over 100 kB, arrays
            over 4000 items, nesting past level 10, or a type with no JSON form (bytes too).
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, Enum):
        return clean_value(value.value, path, depth=depth)
    if isinstance(value, str):
        return check_str(value, path)
    if isinstance(value, int):
        if not -_MAX_INT < value < _MAX_INT:
            raise ValidationError(
                f"{path}: the integer has more than 4000 digits and cannot be written as JSON"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                f"{path}: {value!r} is not a finite number; JSON cannot carry NaN or Infinity"
            )
        return float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError(
                f"{path}: Decimal({str(value)!r}) is not a finite number; "
                "JSON cannot carry NaN or Infinity"
            )
        if len(value.as_tuple().digits) > _MAX_DIGITS:
            raise ValidationError(
                f"{path}: the Decimal has more than {_MAX_DIGITS} digits; "
                "numbers that long are refused like integers"
            )
        return value
    return _convert(value, path, depth)


def _convert(value: object, path: str, depth: int) -> JSON:
    """Clean the containers and the types JSON has no form for."""
    if isinstance(value, Mapping):
        return _clean_mapping(value, path, depth + 1)
    if isinstance(value, (list, tuple)):
        return _clean_sequence(value, path, depth + 1)
    if isinstance(value, (set, frozenset)):
        items = _clean_sequence(list(value), path, depth + 1)
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:
            return items  # mixed types do not sort: iteration order it is
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise ValidationError(
        f"{path}: a value of type {_type_name(value)} cannot be sent as JSON; "
        "convert it to str, number, bool, list or dict first"
    )


def clean_properties(
    value: Mapping[str, object] | None,
    path: str,
    *,
    max_keys: int | None = None,
    only: tuple[str, ...] | None = None,
) -> dict[str, JSON]:
    """Return a cleaned copy of a top-level mapping (event properties, traits, context).

    The mapping itself is nesting level 1. ``None`` gives an empty dict.

    Args:
        value: The caller's mapping.
        path: Its name in error messages (``properties``).
        max_keys: The most top-level keys allowed (the revision's event property limit), or
            None.
        only: Clean and copy just these top-level keys (the ones the blueprint reads;
            the others are never sent), or None for all of them.

    Raises:
        ValidationError: ``value`` is not a mapping, has too many keys, or a value fails
            ``clean_value``.
    """
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(
            f"{path}: must be a mapping (a dict) of str keys to values, "
            f"got a value of type {_type_name(value)}"
        )
    if max_keys is not None and len(value) > max_keys:
        raise ValidationError(
            f"{path}: {len(value)} keys is over the limit of {max_keys}; "
            f"Klaviyo rejects over {max_keys} event properties"
        )
    if only is not None:
        value = {k: value[k] for k in only if k in value}
    return _clean_mapping(value, path, 1)  # type: ignore[arg-type]


def _sentinel_for(value: object) -> str | dict[str, JSON]:
    """Stand a Decimal in as a marked string, which dumps() swaps for the exact number;
    write a read-only mapping as the object it is."""
    if isinstance(value, Decimal):
        return f"{_DECIMAL_MARK}{value}"
    if isinstance(value, MappingProxyType):  # the shared read-only empties (NO_CONSENT...)
        return dict(value)
    raise TypeError(f"a value of type {_type_name(value)} is not JSON; clean it first")


# A per-process random mark: a caller's string cannot collide with it by accident or design.
_DECIMAL_MARK = f"klaviyo-signal-decimal-{secrets.token_hex(16)}:"
_DECIMAL_SENTINEL = re.compile(rf'"{_DECIMAL_MARK}([-+.0-9Ee]+)"')
# Built once and stateless; the C encoder is used since there is no indent.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_sentinel_for
)


def dumps(value: JSON) -> bytes:
    """Return ``value`` as compact UTF-8 JSON bytes, with each Decimal written exactly.

    A Decimal is written as ``str(decimal)`` (``Decimal("19.99")`` -> ``19.99``,
    ``Decimal("1E+2")`` -> ``1E+2``, both valid JSON numbers), never through float.
    Without Decimals this costs one ``json.dumps`` plus a substring check.
    """
    return finish(_encode(value))


def _one_shot_encoder() -> Callable[[object], str]:
    """Return the C encoder, built once, as a function of one value.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs as much as
    encoding a small event. Without a markers dict it skips the cycle check: cleaned
    values are trees (the depth limit would have refused a cycle).
    """
    if c_make_encoder is None:  # an interpreter without the _json accelerator
        return _ENCODER.encode
    encoder = c_make_encoder(
        None, _sentinel_for, encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: object) -> str:
        return "".join(encoder(value, 0))

    return encode


def dumps_text(value: object) -> str:
    """Return ``value`` as a JSON fragment for a body assembled from pieces.

    Decimals are still marked: pass the assembled text through ``finish`` once.
    """
    return _encode(value)


def finish(text: str) -> bytes:
    """Return text assembled from ``dumps_text`` pieces as bytes, each Decimal written exactly."""
    if _DECIMAL_MARK in text:
        text = _DECIMAL_SENTINEL.sub(r"\1", text)
    return text.encode("utf-8")


_encode = _one_shot_encoder()
_PRETTY = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=2, default=_sentinel_for)


def pretty(value: JSON) -> str:
    """Return ``value`` as indented JSON for people to read, each Decimal written exactly."""
    text = _PRETTY.encode(value)
    if _DECIMAL_MARK in text:
        text = _DECIMAL_SENTINEL.sub(r"\1", text)
    return text
