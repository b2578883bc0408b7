"""The installed version, read from the package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("klaviyo-signal")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"
