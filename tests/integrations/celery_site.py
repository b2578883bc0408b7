"""The Celery app of tests/integrations/test_celery.py: a worker runs it in a subprocess.

The broker is kombu's filesystem transport in CELERY_FOLDER, so no server is needed. The
client's flush_interval is long: events leave promptly only because the integration flushes.
"""

from __future__ import annotations

import json
import os

from celery import Celery

import klaviyo_signal
from klaviyo_signal.integrations.celery import install


def make_app(folder: str) -> Celery:
    """Return the app, its broker a folder both the test and the worker read."""
    app = Celery("celery_site", broker="filesystem://", set_as_current=False)
    app.conf.broker_transport_options = {
        "data_folder_in": folder,
        "data_folder_out": folder,
        "store_processed": False,
        "control_folder": os.path.join(folder, "control"),
    }
    app.conf.broker_connection_retry_on_startup = True
    app.conf.worker_hijack_root_logger = False
    return app


app = make_app(os.environ.get("CELERY_FOLDER", "."))
client = klaviyo_signal.Client(
    "AbC123",
    "pk_test_0123456789abcdef0123456789abcdef",
    base_url=os.environ.get("FAKE_URL", "http://127.0.0.1:9"),
    flush_interval=120.0,
)
install(client, app=app, flush_each_task=os.environ.get("FLUSH_EACH_TASK", "1") == "1")


@app.task(name="site.order")
def order(value: int) -> str:
    """Track an order for whoever the task's request context names."""
    context = klaviyo_signal.current_context()
    client.track("Order Completed", {"value": value})
    return json.dumps(None if context is None else context.user_id)


@app.task(name="site.for_customer")
def for_customer() -> None:
    """Track an order naming its customer explicitly."""
    client.track("Order Completed", {"value": 1}, user_id="customer-7")
