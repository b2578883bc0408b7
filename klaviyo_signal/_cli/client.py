"""The Client that ``verify`` and ``send`` build from the environment, and its revision line."""

from __future__ import annotations

import warnings
from typing import Any, TextIO

from .._client import Client
from .._klaviyo.revisions import revision

__all__ = ["client_from_env", "revision_line"]


def client_from_env(command: str, err: TextIO, **options: Any) -> Client:
    """Build ``Client.from_env(**options)``; print its warnings as this command's own lines.

    Raises:
        ConfigurationError: A key or option is missing or wrong.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = Client.from_env(**options)
    for warning in caught:
        err.write(f"klaviyo-signal {command}: warning: {warning.message}\n")
    return client


def revision_line(name: str) -> str:
    """Return ``API revision: NAME (status)``, the first line ``verify`` prints."""
    status = revision(name).status()
    if status.state == "stable":
        return f"API revision: {name} (stable)\n"
    if status.state == "deprecated":
        return f"API revision: {name} (deprecated since {status.since})\n"
    return (
        f"API revision: {name} (retired since {status.since}; Klaviyo serves it as "
        f"{status.served_as})\n"
    )
