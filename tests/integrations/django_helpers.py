"""A USER_ID callable for tests/integrations/django_site.py, named by its dotted path."""

from __future__ import annotations

from typing import Any


def username(request: Any) -> str | None:
    """Return the logged-in user's username (a database read under a lazy request.user)."""
    user = request.user
    return user.username if user.is_authenticated else None
