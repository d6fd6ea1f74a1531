"""moto's WSGI application, served by gunicorn in the local stack (see `local.moto_server`).

`python -m moto.server` serves it with werkzeug's development server, which closes the
connection after every response: each S3 or SQS call then pays a TCP connect in the client
and a new thread in moto, which S3 and SQS (keep-alive) never make a client pay.

Three of moto's costs are cut here, with the same answers (`speed_up_moto`): moto shares this
machine's two CPUs with everything it serves, one GIL for every call, so its CPU per image
sets the pipeline's wall time in the benchmarks and the tests (py-spy of moto 5.2.5 under a
500-image set, `bench/README.md`). In AWS none of it is on ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import moto
import moto.backends
import moto.sqs.models
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def speed_up_moto() -> None:
    """Make three of moto's per-request costs constant; every answer stays the same.

    - Finding a request's backend lists moto's package folder and stats every entry, under
      the dispatcher's lock, on every request: the folder is listed once instead.
    - Each message a ReceiveMessage returns checks its retention period by computing every
      attribute of its queue, three of them counting the queue's messages: O(messages) per
      message, so a 500-message queue costs O(n²) to drain. The period is read directly.
    - SQS's clock (every message's visibility and delay, on every scan) built two datetimes
      per reading: it reads time.time(), the same seconds since the epoch.
    """
    modules = tuple(moto.backends.list_of_moto_modules())

    def list_of_moto_modules() -> Iterable[str]:
        return modules

    replacements: tuple[tuple[object, str, object], ...] = (
        (moto.backends, "list_of_moto_modules", list_of_moto_modules),
        (moto.sqs.models, "unix_time", _unix_time),
        (moto.sqs.models, "unix_time_millis", _unix_time_millis),
        (
            moto.sqs.models.SQSBackend,
            "is_message_valid_based_on_retention_period",
            _within_retention,
        ),
    )
    for owner, name, replacement in replacements:
        if not hasattr(owner, name):  # moto moved it: setattr would add a name nothing calls
            raise RuntimeError(f"moto {moto.__version__} has no {name}: update speed_up_moto")
        setattr(owner, name, replacement)


_moto_unix_time = vars(moto.sqs.models)["unix_time"]


def _unix_time(dt: datetime | None = None) -> float:
    return time.time() if dt is None else float(_moto_unix_time(dt))


def _unix_time_millis(dt: datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


def _within_retention(self: moto.sqs.models.SQSBackend, queue_name: str, message: Any) -> bool:
    period = int(vars(self.get_queue(queue_name))["message_retention_period"])
    return bool(period + message.sent_timestamp / 1000 > time.time())


speed_up_moto()
app = DomainDispatcherApplication(create_backend_app)
