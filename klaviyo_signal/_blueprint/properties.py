"""A ``PropertyMap`` applied: the properties an event or a profile gets from a call."""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import ValidationError
from .._klaviyo.json import JSON
from .paths import MISSING, split_path
from .rules import PropertyMap

__all__ = ["CONSENT", "apply_properties", "first_present", "passes_through"]


CONSENT = "consent"
"""The event property that carries the call's consent state: no caller value may take it."""


def passes_through(pmap: PropertyMap, name: str) -> bool:
    """Whether a call's property ``name`` reaches the output of ``pmap`` under that name."""
    kept = pmap.keep == "all" or name in pmap.keep
    return kept and name not in pmap.drop and name not in pmap.rename


# Paths come from blueprints, so this stays small; a dict lookup is cheaper than a call.
_SPLIT: dict[str, tuple[str, ...]] = {}


def _split(path: str) -> tuple[str, ...]:
    if len(_SPLIT) >= 4096:
        _SPLIT.clear()
    parts = _SPLIT[path] = split_path(path)
    return parts


def first_present(view: Mapping[str, JSON], paths: tuple[str, ...]) -> tuple[str, JSON] | None:
    """Return the first path (and its value) that holds something other than null.

    Raises:
        ValidationError: No path holds a value and one was blocked by a non-object on the
            way (``context.page`` given as a string), which would otherwise vanish silently.
    """
    blocked: tuple[str, object] | None = None
    for path in paths:
        # The walk of ``lookup``, inlined: this runs for every mapped field of every call.
        parts = _SPLIT.get(path) or _split(path)
        if len(parts) == 2:
            # properties.revenue and the like: one object, one key.
            current: object = view.get(parts[0], MISSING)
            if type(current) is dict:
                current = current.get(parts[1])
                if current is not None:
                    return path, current
                continue
        current = view
        for index, part in enumerate(parts):
            if type(current) is not dict and not isinstance(current, Mapping):
                if blocked is None:
                    blocked = (".".join(parts[:index]), current)
                current = MISSING
                break
            current = current.get(part, MISSING)
            if current is MISSING:
                break
        if current is not MISSING and current is not None:
            return path, current  # type: ignore[return-value]
    if blocked is not None:
        raise ValidationError(
            f"{blocked[0]}: must be an object to read {paths[0].rpartition('.')[2]!r} "
            f"from it, got {blocked[1]!r}"
        )
    return None


def apply_properties(
    pmap: PropertyMap, base: Mapping[str, JSON], view: Mapping[str, JSON]
) -> dict[str, JSON]:
    """Return the properties ``pmap`` makes of ``base`` (the call's, or one item's)."""
    if pmap.keep == "all":
        selected = dict(base)
    else:
        selected = {name: base[name] for name in pmap.keep if name in base}
    rename = pmap.rename
    for source in rename:
        if source in base:
            selected[source] = base[source]
    for name in pmap.drop:
        selected.pop(name, None)
    # selected is already a new dict; most maps rename nothing.
    out = {rename.get(k, k): v for k, v in selected.items()} if rename else selected
    for target, paths in pmap.sources.items():
        found = first_present(view, paths)
        if found is not None:
            out[target] = found[1]
    for target, default in pmap.defaults.items():
        out.setdefault(target, default)
    out.update(pmap.constants)
    return out
