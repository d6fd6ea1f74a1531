"""The kinds of failure a handler can report to the consumer runtime.

Anything else a handler raises is treated as retryable: an unknown failure must never
delete a message, because deleting is the only way to lose work.
"""

from __future__ import annotations


class RetryableError(Exception):
    """Leave the message on the queue; it comes back after a backoff delay.

    `delay` overrides the runtime's exponential backoff (seconds) when the handler knows
    better, e.g. "the originals are not in S3 yet".
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help: record the reason and stop (the message goes to the DLQ)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidMessage(PermanentError):
    """The message body is not its queue's model: a poison pill, kept apart in the DLQ."""


class Refused(PermanentError):
    """A contributor's input that will not be processed; `reason` is the sentence they read.

    The one family for every refusal: an archive, a manifest, a family, an SVG. Handlers
    catch it to record the reason where the contributor sees it (the upload, the image);
    one that escapes a handler is a permanent failure like any other.
    """
