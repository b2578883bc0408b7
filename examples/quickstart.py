"""klaviyo-signal in a minute, with no Klaviyo account: send calls to a local fake Klaviyo.

Run it with the testing extra installed::

    pip install 'klaviyo-signal[testing]'
    python examples/quickstart.py

To send to your real Klaviyo account instead, drop FakeKlaviyo and build the client from
your keys (Account > Settings > API Keys), without ``base_url``::

    client = Client("AbC123", "pk_...", sync_mode=True)
    # or, with KLAVIYO_PUBLIC_API_KEY and KLAVIYO_PRIVATE_API_KEY set:
    client = Client.from_env(sync_mode=True)
"""

from __future__ import annotations

from decimal import Decimal

from klaviyo_signal import Client
from klaviyo_signal.testing import FakeKlaviyo

with FakeKlaviyo() as fake:
    # sync_mode=True sends before each call returns, so every Delivery below is final.
    # In a web app leave it off: calls are queued and sent by a background thread.
    with Client("AbC123", "pk_test_0123456789abcdef", base_url=fake.url, sync_mode=True) as client:
        deliveries = {
            "identify": client.identify(
                "user-42", {"email": "jane@example.com", "firstName": "Jane"}
            ),
            "track Order Completed": client.track(
                "Order Completed",
                {"order_id": "o-1", "revenue": Decimal("42.50"), "currency": "GBP"},
                user_id="user-42",
            ),
            "page Pricing": client.page(
                "Pricing", {"url": "https://example.com/pricing"}, user_id="user-42"
            ),
        }
    for call, delivery in deliveries.items():
        print(f"{call:<22} {delivery.status} (HTTP {delivery.http_status})  {delivery.message_id}")

    print("\nWhat the fake Klaviyo recorded:")
    for profile in fake.profiles:
        print(f"  profile {profile.email} external_id={profile.external_id} {profile.attributes}")
    for event in fake.events:
        value = f"{event.value} {event.value_currency}" if event.value is not None else "-"
        print(f"  event {event.metric:<10} value={value:<9} for {event.profile.email}")
