"""What the caller said, checked: a call's message, identity, consent and subscriptions."""
