"""The `ingest` command's mistakes and outages: one line on stderr and a documented exit code.

A user's mistake (a wrong id, a wrong queue, a database or endpoint that is not there,
missing credentials) is never a traceback: `explain` turns the exceptions these raise into
`Failure(code, message)`, and `ingest` prints `ingest <command>: <message>` and exits
with the code. Anything `explain` does not know is a defect: its traceback is printed,
then one line, and the exit code is `DEFECT`.

The exit codes (README, "Exit codes"):

      0  done
      1  not found, nothing matched, partly done, a queue not created, or AWS refused
      2  usage error or bad input
      3  the database or the AWS endpoint unreachable, or missing (or not migrated)
      4  no AWS credentials, or credentials refused
     70  a defect: an unexpected exception, its traceback printed
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from urllib.parse import urlsplit

OK = 0
NOT_FOUND = 1
USAGE = 2  # argparse uses 2 too
UNREACHABLE = 3
CREDENTIALS = 4
DEFECT = 70  # EX_SOFTWARE
INTERRUPTED = 130

# AWS error codes that mean "these credentials may not do this" (or are not valid).
_CREDENTIAL_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AuthorizationError",
}
_NO_QUEUE_CODES = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NonExistentQueue",
}


class CliError(Exception):
    """A failure the command explains itself: `raise CliError(NOT_FOUND, "no upload …")`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Failure:
    code: int
    message: str


def database_address(dsn: str) -> str:
    """host:port of a DSN, never its password."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname or "localhost", parts.port or 5432
    except ValueError:
        return "an unreadable DATABASE_URL"
    return f"{host}:{port}"


def database_name(dsn: str) -> str:
    try:
        return urlsplit(dsn).path.lstrip("/") or "?"
    except ValueError:
        return "?"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _origin(url: object) -> str:
    """scheme://host:port/ of a request URL (its path and query are the call's, not the
    endpoint's)."""
    try:
        parts = urlsplit(str(url or ""))
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}/" if parts.netloc else ""


def _through_asyncpg(exc: BaseException) -> bool:
    """Whether the exception was raised inside asyncpg (a database connection)."""
    return any("asyncpg" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def explain(exc: BaseException, database_url: str, endpoint_url: str | None) -> Failure | None:
    """The exit code and one-line message for an expected failure; None for a defect."""
    import asyncpg
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, CliError):
        return Failure(exc.code, exc.message)
    where = database_address(database_url)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return Failure(
            UNREACHABLE,
            f'no database "{database_name(database_url)}" at {where} (DATABASE_URL)',
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return Failure(
            UNREACHABLE,
            f'the database "{database_name(database_url)}" at {where} is not migrated '
            f"({_reason(exc)}): run `ingest migrate`",
        )
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return Failure(CREDENTIALS, f"the database at {where} refused: {_reason(exc)}")
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.ConnectionDoesNotExistError) or (
        isinstance(exc, OSError) and _through_asyncpg(exc)
    ):
        return Failure(
            UNREACHABLE, f"cannot reach the database at {where} (DATABASE_URL): {_reason(exc)}"
        )
    endpoint = endpoint_url or "of AWS"
    if isinstance(exc, EndpointConnectionError):
        url = _origin(exc.kwargs.get("endpoint_url")) or endpoint
        return Failure(UNREACHABLE, f"cannot reach the AWS endpoint {url} (AWS_ENDPOINT_URL)")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError):
        url = _origin(exc.kwargs.get("endpoint_url")) or endpoint
        return Failure(UNREACHABLE, f"cannot reach the AWS endpoint {url}: {_reason(exc)}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Failure(
            CREDENTIALS,
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE with a profile that has them",
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or _reason(exc)
        if code in _CREDENTIAL_CODES:
            return Failure(CREDENTIALS, f"AWS refused the credentials: {code}: {message}")
        if code in _NO_QUEUE_CODES:
            return Failure(
                NOT_FOUND,
                f"{message.rstrip('.')} (`ingest bootstrap` creates the queues "
                "named in topology.json)",
            )
        return Failure(NOT_FOUND, f"AWS refused: {code}: {message}")
    return None
