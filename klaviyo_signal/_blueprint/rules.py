"""The parts of a blueprint as plain values: rules, property maps, the catch-all, the profile.

Each part checks itself when built (``ValidationError`` naming the field), and the file
loader runs the same checks over a whole file at once, so a blueprint that exists is one
that can be applied to any call without a configuration error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, TypeAlias

import attrs

from .._calls.message import Message
from .._calls.subscription import CHANNELS
from .._errors import ValidationError
from .._klaviyo.json import JSON, check_str, clean_value
from .paths import ITEM_ROOTS, check_path

__all__ = [
    "ATTRIBUTES",
    "LOCATION_FIELDS",
    "CatchAll",
    "IdentifyRule",
    "ItemRule",
    "Mapper",
    "ProfileMap",
    "PropertyMap",
    "Rule",
    "SubscribeRule",
    "check_json",
    "check_metric",
    "metric_name",
]

Keep: TypeAlias = "Literal['all'] | tuple[str, ...]"
MetricStyle = Literal["snake_case", "as_is"]

# Klaviyo's standard profile attributes a trait can feed (besides the identifiers).
ATTRIBUTES = ("first_name", "last_name", "organization", "title", "image", "locale")
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "region",
    "zip",
    "country",
    "latitude",
    "longitude",
)
# Klaviyo's metric name limit: fewer than 128 characters.
_MAX_METRIC = 128


class Mapper(Protocol):
    """Turns one call into the Klaviyo event's properties, or None to drop the call.

    A plain function fits: ``def signed_up(message: Message) -> dict[str, JSON] | None``.
    A blueprint file names one as ``"package.module:function"``.
    """

    def __call__(self, message: Message, /) -> Mapping[str, JSON] | None: ...


def metric_name(event: str) -> str:
    """Return the snake_case metric name for an event name (``Signed Up`` -> ``signed_up``)."""
    return re.sub(r"[^0-9a-z]+", "_", event.lower()).strip("_") or event


def check_metric(value: object) -> str | None:
    """Return why ``value`` cannot be a Klaviyo metric name, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"expected a non-empty metric name, got {value!r}"
    if len(value) >= _MAX_METRIC:
        return f"the metric name is {len(value)} characters; Klaviyo needs fewer than 128"
    return _text_problem(value)


def _text_problem(value: str) -> str | None:
    """Return why a blueprint string cannot be sent (a lone surrogate), or None."""
    try:
        check_str(value, "")
    except ValidationError as exc:
        return str(exc).removeprefix(": ")
    return None


def check_json(value: object, path: str) -> str | None:
    """Return why ``value`` (found at ``path``) cannot be sent as JSON, or None."""
    try:
        clean_value(value, path, depth=1)
    except ValidationError as exc:
        return str(exc)
    return None


def _raise(attribute: attrs.Attribute[Any], problem: str | None) -> None:
    if problem is not None:
        raise ValidationError(f"{attribute.name}: {problem}")


def _metric(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _raise(attribute, check_metric(value))


def _path(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _raise(attribute, check_path(value, ITEM_ROOTS))


def _paths(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Accept one path or several (the first one present wins)."""
    return (value,) if isinstance(value, str) else tuple(value)


def _paths_map(
    value: Mapping[str, str | tuple[str, ...] | list[str]],
) -> dict[str, tuple[str, ...]]:
    return {target: _paths(paths) for target, paths in value.items()}


def _all_paths(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    paths = value.values() if isinstance(value, Mapping) else value
    for path in paths:
        for one in _paths(path):
            _raise(attribute, check_path(one, ITEM_ROOTS))


def _keep(value: str | tuple[str, ...] | list[str]) -> Keep:
    return "all" if value == "all" else tuple(value)


def _check_names(attribute: attrs.Attribute[Any], names: Iterable[object]) -> None:
    """Property names (and rename targets) are sent as keys: each must be a sendable str."""
    for name in names:
        if not isinstance(name, str):
            raise ValidationError(f"{attribute.name}: expected property names, got {name!r}")
        problem = _text_problem(name)
        if problem is not None:
            raise ValidationError(f"{attribute.name}[{name!r}]: {problem}")


def _names(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value != "all":
        _check_names(attribute, value)


def _renames(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_names(attribute, (*value, *value.values()))


def _json_values(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_names(attribute, value)
    for key, item in value.items():
        problem = check_json(item, f"{attribute.name}[{key!r}]")
        if problem is not None:
            raise ValidationError(problem)


@attrs.frozen
class PropertyMap:
    """Which properties an event (or profile) gets, applied in the order of the fields.

    Attributes:
        keep: ``"all"`` or the names of the call's properties to carry over.
        drop: Names removed from what ``keep`` selected.
        rename: Source name -> target name; a renamed property is kept even if not listed.
        sources: Target name -> dotted path(s) anywhere in the call; the first present wins.
        defaults: Target name -> value, used when nothing above set it.
        constants: Target name -> value, always set.
    """

    keep: Keep = attrs.field(default="all", converter=_keep, validator=_names)
    drop: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_names)
    rename: Mapping[str, str] = attrs.field(factory=dict, converter=dict, validator=_renames)
    sources: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_paths_map, validator=[_names, _all_paths]
    )
    defaults: Mapping[str, JSON] = attrs.field(factory=dict, converter=dict, validator=_json_values)
    constants: Mapping[str, JSON] = attrs.field(
        factory=dict, converter=dict, validator=_json_values
    )


def _no_consent_target(_: Any, attribute: attrs.Attribute[Any], value: PropertyMap) -> None:
    """An event's ``consent`` property is the call's consent state: no rule may set it."""
    targets = (
        *(() if value.keep == "all" else value.keep),
        *value.rename.values(),
        *value.sources,
        *value.defaults,
        *value.constants,
    )
    if "consent" in targets:
        raise ValidationError(
            f"{attribute.name}: the event property 'consent' is reserved for the call's "
            "consent state (written on every event); give this property another name"
        )


@attrs.frozen
class ItemRule:
    """One extra event per element of a list in the call (``Ordered Product`` per product).

    Paths may start at ``item``, the element; each event's ``unique_id`` is the parent's
    followed by ``:<index>``, and its time is the parent's.

    Attributes:
        path: Dotted path of the list, such as ``properties.products``.
        metric: The Klaviyo metric name of the per-item events.
        properties: Which properties each event gets; ``keep`` selects the item's keys.
        value: Dotted path(s) of the number that feeds ``value``.
        value_currency: Dotted path(s) of the ISO 4217 code that feeds ``value_currency``.
    """

    path: str = attrs.field(validator=_path)
    metric: str = attrs.field(validator=_metric)
    properties: PropertyMap = attrs.field(factory=PropertyMap, validator=_no_consent_target)
    value: tuple[str, ...] = attrs.field(default=(), converter=_paths, validator=_all_paths)
    value_currency: tuple[str, ...] = attrs.field(
        default=(), converter=_paths, validator=_all_paths
    )


@attrs.frozen
class Rule:
    """How one source event (or ``page``) becomes Klaviyo events.

    Attributes:
        metric: The Klaviyo metric name.
        enabled: False drops the event, with a reason saying so.
        properties: Which properties the event gets (default: all the call's properties).
        value: Dotted path(s) of the number that feeds Klaviyo's ``value`` (revenue).
        value_currency: Dotted path(s) of the ISO 4217 code that feeds ``value_currency``.
        unique_id: Dotted path of the event's ``unique_id`` (retries and duplicates count
            once); default the call's ``message_id``.
        time: Dotted path of when it happened; default the call's ``timestamp``.
        mapper: A function that computes the properties instead of ``properties``.
        items: Send one more event per element of a list, such as ``Ordered Product``.
    """

    metric: str = attrs.field(validator=_metric)
    enabled: bool = True
    properties: PropertyMap = attrs.field(factory=PropertyMap, validator=_no_consent_target)
    value: tuple[str, ...] = attrs.field(default=(), converter=_paths, validator=_all_paths)
    value_currency: tuple[str, ...] = attrs.field(
        default=(), converter=_paths, validator=_all_paths
    )
    unique_id: str = attrs.field(default="message_id", validator=_path)
    time: str = attrs.field(default="timestamp", validator=_path)
    mapper: Mapper | None = attrs.field(default=None)
    items: ItemRule | None = None

    @mapper.validator
    def _callable(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not callable(value):
            raise ValidationError(f"mapper: expected a function, got {value!r}")


def check_channels(value: object) -> str | None:
    """Return why ``value`` cannot be a list of subscription channels, or None."""
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not value
        or any(name not in CHANNELS for name in value)
    ):
        return f"expected a non-empty list of {', '.join(map(repr, CHANNELS))}, got {value!r}"
    return None


def check_name(value: object) -> str | None:
    """Return why ``value`` cannot be a trait name, list id or source, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"expected a non-empty string, got {value!r}"
    return _text_problem(value)


def _name(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _raise(attribute, check_name(value))


def _optional_name(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _raise(attribute, check_name(value))


def _channels(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _raise(attribute, check_channels(value))


def _tuple(value: Any) -> Any:
    """Freeze a list of names; a lone string stays as it is, for the check to refuse."""
    return value if isinstance(value, str) else tuple(value)


@attrs.frozen
class SubscribeRule:
    """Turn an identify into a list subscription when a trait is ``true``.

    Attributes:
        trait: The trait that asks for it, such as ``newsletter``; only the value ``true``
            subscribes (a missing or false trait leaves consent as it is).
        list_id: The Klaviyo list; None: the account's default opt-in setting applies.
        channels: Which of ``email``, ``sms``, ``sms_transactional`` to subscribe; a
            channel whose identifier the identify lacks is left out.
        custom_source: Where the consent was collected, as Klaviyo shows it.
    """

    trait: str = attrs.field(validator=_name)
    list_id: str | None = attrs.field(default=None, validator=_optional_name)
    channels: tuple[str, ...] = attrs.field(
        default=("email",), converter=_tuple, validator=_channels
    )
    custom_source: str | None = attrs.field(default=None, validator=_optional_name)


@attrs.frozen
class IdentifyRule:
    """What ``identify`` does: create or update the profile (unless disabled).

    Attributes:
        enabled: False drops identify calls.
        subscribe: When set, an identify whose trait asks for it also subscribes the
            profile to a list; off by default.
    """

    enabled: bool = True
    subscribe: SubscribeRule | None = None


def _one_of(*choices: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValidationError(
                f"{attribute.name}: expected one of {', '.join(map(repr, choices))}, got {value!r}"
            )

    return check


@attrs.frozen
class CatchAll:
    """What happens to a ``track`` event that has no rule.

    Attributes:
        action: ``"drop"`` (the default) or ``"forward"`` with all its properties.
        metric_style: For forwarded events: ``"snake_case"`` (``Signed Up`` ->
            ``signed_up``) or ``"as_is"``.
    """

    action: Literal["drop", "forward"] = attrs.field(
        default="drop", validator=_one_of("drop", "forward")
    )
    metric_style: MetricStyle = attrs.field(
        default="snake_case", validator=_one_of("snake_case", "as_is")
    )


def _known(names: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        for key in value:
            if key not in names:
                raise ValidationError(f"{attribute.name}: {key!r} is not one of {', '.join(names)}")
        _all_paths(_, attribute, value)

    return check


def _default_attributes() -> dict[str, tuple[str, ...]]:
    return {
        "first_name": ("traits.firstName", "traits.first_name"),
        "last_name": ("traits.lastName", "traits.last_name"),
        "organization": ("traits.company.name", "traits.company", "traits.organization"),
        "title": ("traits.title",),
        "image": ("traits.avatar", "traits.image"),
    }


def _default_location() -> dict[str, tuple[str, ...]]:
    return {
        "address1": ("traits.address.street",),
        "city": ("traits.address.city",),
        "region": ("traits.address.state",),
        "zip": ("traits.address.postalCode", "traits.address.postal_code"),
        "country": ("traits.address.country",),
    }


@attrs.frozen
class ProfileMap:
    """How traits become a Klaviyo profile (the identifiers are always mapped).

    A trait that feeds an attribute or the location (``traits.address.city`` feeds from
    ``address``) does not repeat in the profile's ``properties``.

    Attributes:
        attributes: Klaviyo attribute (first_name, last_name, organization, title, image,
            locale) -> dotted path(s); the first present wins.
        location: Klaviyo location field (address1, city, region, zip, country...) ->
            dotted path(s).
        properties: Which remaining traits go to the profile's custom ``properties``.
    """

    attributes: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=_default_attributes, converter=_paths_map, validator=_known(ATTRIBUTES)
    )
    location: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=_default_location, converter=_paths_map, validator=_known(LOCATION_FIELDS)
    )
    properties: PropertyMap = attrs.field(factory=PropertyMap)
