"""The local stack's moto server keeps connections open, as S3 and SQS do.

werkzeug's server (behind `python -m moto.server`) closes every connection: each call of the
tests, the demo and the benchmarks would pay a TCP connect and moto a new thread.
"""

from __future__ import annotations

import http.client
import urllib.parse


def test_two_requests_share_one_connection(moto_endpoint: str) -> None:
    url = urllib.parse.urlsplit(moto_endpoint)
    assert url.hostname is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    sockets = []
    try:
        for _ in range(2):
            connection.request("GET", "/moto-api/")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert (response.getheader("Connection") or "").lower() != "close"
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None
    assert sockets[0] is sockets[1]
