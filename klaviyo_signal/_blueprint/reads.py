"""Which of a call's properties a rule reads, so only those are checked and copied.

Cleaning (checking every value and copying it, so the caller may reuse its dict) is the
largest part of a call's cost, and most rules send a few named properties: the default
``Order Completed`` rule keeps ``order_id``, ``revenue`` and ``currency`` and never looks
at the line items. A rule that keeps everything, or that has a mapper (which may read
anything), reads all of them. Values no rule reads never leave the process, so they are
neither checked nor held in the queue. The same goes for Segment's ``context`` (library,
user agent, IP...): only its consent, its traits and what a path names are read.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._calls.message import Reads
from .rules import ItemRule, Mapper, ProfileMap, PropertyMap, Rule

__all__ = ["ALL", "Reads", "context_reads", "profile_paths", "rule_paths", "rule_reads"]

ALL = None
"""The rule reads every property (``keep: "all"``, a mapper, or a path to all of them)."""


def _source_paths(pmap: PropertyMap) -> Iterable[str]:
    for paths in pmap.sources.values():
        yield from paths


def _item_paths(items: ItemRule | None) -> Iterable[str]:
    if items is None:
        return
    yield items.path
    yield from items.value
    yield from items.value_currency
    yield from _source_paths(items.properties)


def profile_paths(profile: ProfileMap) -> Iterable[str]:
    """Yield every path the profile mapping follows."""
    for paths in (*profile.attributes.values(), *profile.location.values()):
        yield from paths
    yield from _source_paths(profile.properties)


def rule_paths(rule: Rule, profile: ProfileMap) -> tuple[str, ...]:
    """Return every dotted path a rule (with the blueprint's profile mapping) follows."""
    return (
        *_source_paths(rule.properties),
        *rule.value,
        *rule.value_currency,
        rule.unique_id,
        rule.time,
        *_item_paths(rule.items),
        *profile_paths(profile),
    )


def _names(paths: Iterable[str], root: str) -> set[str] | None:
    """Return the top-level keys of ``root`` the paths read, or None when one reads it all."""
    names: set[str] = set()
    for path in paths:
        first, _, rest = path.partition(".")
        if first != root:
            continue
        if not rest:
            return None  # the whole object
        names.add(rest.partition(".")[0])
    return names


def rule_reads(rule: Rule, mapper: Mapper | None, profile: ProfileMap) -> tuple[str, ...] | None:
    """Return the top-level property names ``rule`` can read, or ``ALL``.

    Args:
        rule: The rule a call matched.
        mapper: The blueprint-wide mapper (used when the rule has none).
        profile: The blueprint's profile mapping (its paths may read properties too).
    """
    if rule.mapper is not None or mapper is not None or rule.properties.keep == "all":
        return ALL
    names = _names(rule_paths(rule, profile), "properties")
    if names is None:
        return ALL
    return tuple(sorted(names | set(rule.properties.keep) | set(rule.properties.rename)))


# Every call reads these context keys: its consent and its traits (identifiers).
_CONTEXT_ALWAYS = frozenset({"consent", "traits"})


def context_reads(paths: Iterable[str], mapper: Mapper | None) -> tuple[str, ...] | None:
    """Return the top-level context keys a call can read, or ``ALL``.

    Args:
        paths: Every path the call's rule and the profile mapping follow (none for a call
            the blueprint drops: it still reads its consent and traits).
        mapper: The mapper that maps the call, if any (it may read anything).
    """
    if mapper is not None:
        return ALL
    names = _names(paths, "context")
    return ALL if names is None else tuple(sorted(names | _CONTEXT_ALWAYS))
