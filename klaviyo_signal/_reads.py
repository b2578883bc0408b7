"""Which of a call's properties a rule reads, so only those are checked and copied.

Cleaning (checking every value and copying it, so the caller may reuse its dict) is the
largest part of a call's cost, and most rules send a few named properties: the default
``Order Completed`` rule keeps ``order_id``, ``revenue`` and ``currency`` and never looks
at the line items. A rule that keeps everything, or that has a mapper (which may read
anything), reads all of them. Values no rule reads never leave the process, so they are
neither checked nor held in the queue.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._rules import ItemRule, Mapper, ProfileMap, PropertyMap, Rule

__all__ = ["ALL", "rule_paths", "rule_reads"]

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


def _profile_paths(profile: ProfileMap) -> Iterable[str]:
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
        *_profile_paths(profile),
    )


def rule_reads(rule: Rule, mapper: Mapper | None, profile: ProfileMap) -> tuple[str, ...] | None:
    """Return the top-level property names ``rule`` can read, or ``ALL``.

    Args:
        rule: The rule a call matched.
        mapper: The blueprint-wide mapper (used when the rule has none).
        profile: The blueprint's profile mapping (its paths may read properties too).
    """
    if rule.mapper is not None or mapper is not None or rule.properties.keep == "all":
        return ALL
    names = set(rule.properties.keep) | set(rule.properties.rename)
    for path in rule_paths(rule, profile):
        root, _, rest = path.partition(".")
        if root != "properties":
            continue
        if not rest:
            return ALL  # the whole properties object
        names.add(rest.partition(".")[0])
    return tuple(sorted(names))
