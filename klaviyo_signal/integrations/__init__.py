"""Framework integrations: put each request's identity and consent where the calls find them.

- ``klaviyo_signal.integrations.django``: a middleware (``django`` extra).
- ``klaviyo_signal.integrations.starlette``: an ASGI middleware, for FastAPI too
  (``starlette`` extra).
- ``klaviyo_signal.integrations.celery``: flush at task end and worker shutdown, and carry the
  request context from the code that enqueues a task to the worker (``celery`` extra).
- ``klaviyo_signal.integrations.cookies``: the cookie readers the middlewares use.

Nothing here is imported by ``import klaviyo_signal``.
"""
