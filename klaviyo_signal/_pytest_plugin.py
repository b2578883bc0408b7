"""pytest fixtures for testing code that uses klaviyo-signal (registered as a pytest11 plugin).

``klaviyo_fake`` is a running FakeKlaviyo; ``klaviyo_client`` is a sync-mode Client bound to
it, so each ``track``/``identify`` call has reached the fake by the time it returns;
``klaviyo_background_client`` is a background-mode one (bulk jobs, as in production), whose
calls reach the fake on ``flush()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from klaviyo_signal._client import Client
    from klaviyo_signal.testing import FakeKlaviyo

__all__ = ["klaviyo_background_client", "klaviyo_client", "klaviyo_fake"]

_PUBLIC_KEY = "AbC123"
_PRIVATE_KEY = "pk_test_0123456789abcdef"


@pytest.fixture
def klaviyo_fake() -> Iterator[FakeKlaviyo]:
    """A started FakeKlaviyo, stopped after the test."""
    # Imported here so that merely installing the package never imports the fake into
    # every pytest run, nor requires the `testing` extra.
    from klaviyo_signal.testing import FakeKlaviyo  # noqa: PLC0415

    with FakeKlaviyo() as fake:
        yield fake


@pytest.fixture
def klaviyo_client(klaviyo_fake: FakeKlaviyo) -> Iterator[Client]:
    """A sync-mode Client that talks to ``klaviyo_fake``, closed after the test."""
    # Lazy too: a test suite that only uses the fake need not build a Client.
    from klaviyo_signal._client import Client  # noqa: PLC0415

    client = Client(_PUBLIC_KEY, _PRIVATE_KEY, base_url=klaviyo_fake.url, sync_mode=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def klaviyo_background_client(klaviyo_fake: FakeKlaviyo) -> Iterator[Client]:
    """A background-mode Client (the default mode, as in production) bound to ``klaviyo_fake``.

    Calls are queued and sent in bulk jobs by its worker; call ``flush()`` before asserting
    on the fake. Closed after the test.
    """
    from klaviyo_signal._client import Client  # noqa: PLC0415

    client = Client(_PUBLIC_KEY, _PRIVATE_KEY, base_url=klaviyo_fake.url, flush_interval=0.05)
    try:
        yield client
    finally:
        client.close()
