"""Klaviyo's published limits on what one call and one request may carry: the one place
for each number.

The rate limits are not here: each revision's schemas publish their own, and
``_klaviyo/revisions`` reads them from there.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "IMPORT_ERRORS_PAGE",
    "MAX_ARRAY_ITEMS",
    "MAX_DEPTH",
    "MAX_EVENT_PROPERTIES",
    "MAX_EVENT_REQUEST_BYTES",
    "MAX_IMPORT_ENTRY_BYTES",
    "MAX_IMPORT_PROFILES",
    "MAX_JOB_BYTES",
    "MAX_JOB_EVENTS",
    "MAX_PROFILE_IMPORT_BYTES",
    "MAX_STRING_BYTES",
    "MAX_SUBSCRIPTION_PROFILES",
]

# What one event's properties may hold.
MAX_STRING_BYTES = 100_000
MAX_ARRAY_ITEMS = 4000
MAX_DEPTH = 10
MAX_EVENT_PROPERTIES = 300
"""The property limit every supported revision accepts; a Client holds calls to its own
revision's (``Revision.max_event_properties``)."""

# Request sizes. An event must fit one POST /api/events (sync mode) or one bulk job
# (background) alone.
MAX_EVENT_REQUEST_BYTES = 5_000_000
MAX_PROFILE_IMPORT_BYTES = 5_000_000

# Bulk event jobs: Klaviyo's limit is 5 MB per request; a job stays a little under it (and
# under 5 MiB as well).
MAX_JOB_EVENTS = 1000
MAX_JOB_BYTES = 5_000_000 - 4096

# Bulk profile import jobs (their 5 MB is MAX_JOB_BYTES too). "The maximum allowed payload
# size per-profile is 100KB", read as the smaller 100,000 bytes.
MAX_IMPORT_PROFILES = 10_000
MAX_IMPORT_ENTRY_BYTES = 100_000
IMPORT_ERRORS_PAGE = 100
"""Import errors per page: the most Klaviyo serves."""

MAX_SUBSCRIPTION_PROFILES: Mapping[str, int] = {"subscribe": 1000, "unsubscribe": 100}
"""Profiles per bulk subscription job, by action."""
