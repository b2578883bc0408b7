"""The built-in blueprint variants, shipped as blueprint files under ``blueprints/``.

Each variant is a file in the same format users write, so ``docs/blueprints.md`` can show
them side by side and a user can copy one as the start of their own.
"""

from __future__ import annotations

import json
from importlib.resources import files

from .._errors import ConfigurationError
from .._klaviyo.json import JSON

__all__ = ["VARIANTS", "variant_data"]

VARIANTS = ("default", "klaviyo_ecommerce")


def variant_data(name: object) -> JSON:
    """Return the raw blueprint file data of a built-in variant.

    Raises:
        ConfigurationError: ``name`` is not a known variant (also a ValueError).
    """
    if name not in VARIANTS:
        known = ", ".join(map(repr, VARIANTS))
        raise ConfigurationError(f"unknown blueprint variant {name!r}; known variants: {known}")
    text = (
        files("klaviyo_signal").joinpath("blueprints").joinpath(f"{name}.json").read_text("utf-8")
    )
    data: JSON = json.loads(text)
    return data
