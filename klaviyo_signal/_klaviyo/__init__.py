"""Klaviyo's side: its objects, revisions and limits, the JSON writer, the wire shapes, HTTP."""
