"""moto's WSGI application, served by gunicorn in the local stack (see `local.moto_server`).

`python -m moto.server` serves it with werkzeug's development server, which closes the
connection after every response: each S3 or SQS call then pays a TCP connect in the client
and a new thread in moto, which S3 and SQS (keep-alive) never make a client pay.
"""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
