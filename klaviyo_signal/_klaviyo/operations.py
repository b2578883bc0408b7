"""Klaviyo's published facts per endpoint: its rate limits, the API scopes it needs, and the
success statuses it documents (``responses``).

All are copied from Klaviyo's OpenAPI spec (``x-klaviyo-ratelimit``, ``x-klaviyo-scopes``)
into ``_schemas/<revision>/rate_limits.json``, so a new endpoint brings its own limits and its own
403 advice by a line of data, not a line of code. Read once, on first use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from .._errors import DEFAULT_SCOPES

__all__ = ["operations", "required_scopes", "success_statuses"]

# What an endpoint the table does not know may answer on success.
_ANY_SUCCESS = frozenset(range(200, 300))


@functools.cache
def operations() -> Mapping[str, Mapping[str, Any]]:
    """Return each operation (``"POST /api/events"``) with its ratelimit and scopes."""
    # Scopes and answers are the same in every supported revision: the newest one's table.
    folder = resources.files("klaviyo_signal") / "_klaviyo" / "schemas" / "2026-07-15"
    text = folder / "rate_limits.json"
    found: dict[str, Mapping[str, Any]] = json.loads(text.read_text("utf-8"))["operations"]
    # The docs' table leaves out the client-side profile endpoint: read its operation object.
    client = json.loads((folder / "client_profile_create.schema.json").read_text("utf-8"))[
        "operation"
    ]
    found["POST /client/profiles"] = {
        "ratelimit": client["x-klaviyo-ratelimit"],
        "scopes": client["x-klaviyo-scopes"],
        "responses": list(client["responses"]),
    }
    # Nor does it list the GET operations that poll a bulk profile import job.
    polls = json.loads((folder / "profile_bulk_import_job.get_operations.json").read_text("utf-8"))
    for operation in polls["operations"].values():
        path = operation["path"].replace("{job_id}", "{id}")
        found[f"GET {path}"] = {
            "ratelimit": operation["x-klaviyo-ratelimit"],
            "scopes": operation["x-klaviyo-scopes"],
            "responses": list(operation["responses"]),
        }
    return found


def required_scopes(endpoint: str) -> tuple[str, ...]:
    """Return the private-key scopes ``endpoint`` (``"POST /api/events"``) needs."""
    operation = operations().get(endpoint)
    if operation is None or not operation.get("scopes"):
        return DEFAULT_SCOPES
    return tuple(operation["scopes"])


@functools.cache
def success_statuses(endpoint: str) -> frozenset[int]:
    """Return the 2xx statuses Klaviyo documents for ``endpoint`` (any 2xx if it is unknown).

    Only these count as delivered: a 3xx or another 2xx comes from something between us and
    Klaviyo (a redirect, a proxy, a captive portal), not from Klaviyo's API.
    """
    operation = operations().get(endpoint)
    found = frozenset(
        int(code)
        for code in (operation or {}).get("responses") or ()
        if str(code).isdigit() and str(code).startswith("2")
    )
    return found or _ANY_SUCCESS
