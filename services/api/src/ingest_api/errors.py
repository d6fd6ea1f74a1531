"""Errors as every client reads them: `{"error": {"code": ..., "message": ...}}`, never a
traceback."""

from __future__ import annotations

from typing import Any

from aiohttp import web

REALM = 'Bearer realm="ingest"'


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def response(self) -> web.Response:
        return error_response(
            self.status, self.code, self.message, headers=self.headers, **self.details
        )


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    return web.json_response({"error": body}, status=status, headers=headers)


def unauthenticated(message: str, *, invalid: bool) -> ApiError:
    challenge = REALM + (', error="invalid_token"' if invalid else "")
    return ApiError(
        401,
        "invalid_key" if invalid else "unauthenticated",
        message,
        headers={"WWW-Authenticate": challenge},
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


# What aiohttp raises itself (no route, wrong method, ...), in words.
HTTP_CODES = {
    404: ("not_found", "there is nothing at this address"),
    405: ("method_not_allowed", "this address does not take that method"),
    413: ("too_large", "the request body is too large"),
}
