"""pytest fixtures for testing code that uses klaviyo-signal (registered as a pytest11 plugin).

``klaviyo_fake`` is a running FakeKlaviyo; ``klaviyo_client`` is a sync-mode Client bound to
it, so each ``track``/``identify`` call has reached the fake by the time it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from klaviyo_signal._client import Client
    from klaviyo_signal.testing import FakeKlaviyo

__all__ = ["klaviyo_client", "klaviyo_fake"]

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
