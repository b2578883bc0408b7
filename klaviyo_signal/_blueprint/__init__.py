"""A checked call -> Klaviyo objects: the blueprint, its rules and files; pure mapping."""
