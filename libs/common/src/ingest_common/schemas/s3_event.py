"""The S3 event notification, as S3 (and moto) deliver it to SQS."""

from __future__ import annotations

from datetime import datetime
from typing import Self
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Lenient(BaseModel):
    # AWS adds fields over time; we read what we need and ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class S3Bucket(_Lenient):
    name: str


class S3Object(_Lenient):
    key: str
    size: int = 0
    etag: str = Field("", alias="eTag")
    sequencer: str | None = None

    @property
    def decoded_key(self) -> str:
        # Keys arrive URL-encoded with '+' for spaces.
        return unquote_plus(self.key)


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Lenient):
    event_name: str = Field(alias="eventName")
    event_time: datetime = Field(alias="eventTime")
    s3: S3Entity


class S3Event(_Lenient):
    """Either real records or S3's `s3:TestEvent`, sent when a notification is configured."""

    records: list[S3EventRecord] = Field(default_factory=list, alias="Records")
    event: str | None = Field(None, alias="Event")

    @model_validator(mode="after")
    def _is_a_notification(self) -> Self:
        # Lenient about fields, not about what it is: a body with neither is a poison pill.
        if not self.records and self.event is None:
            raise ValueError("not an S3 event notification: no Records and no Event")
        return self

    @property
    def is_test_event(self) -> bool:
        return self.event == "s3:TestEvent"
