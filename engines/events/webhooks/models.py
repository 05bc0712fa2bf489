"""Webhook API shapes: what an admin sends and sees."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.http.params import SAFE_ID_PATTERN

EventName = Literal["artifact_written", "artifact_deleted"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048,
                     description="https:// endpoint (http:// only with WEBHOOK_ALLOW_HTTP)")
    events: list[EventName] = Field(min_length=1, max_length=2)
    canvas_id: str | None = Field(default=None, pattern=SAFE_ID_PATTERN, max_length=128,
                                  description="only this canvas's events; all when absent")

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Webhook(BaseModel):
    id: str
    url: str
    events: list[EventName]
    canvas_id: str | None
    status: Literal["active", "disabled"]
    disabled_reason: str | None = Field(description="why deliveries stopped, when disabled")
    consecutive_failures: int
    created_by: str
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="whsec_...: shown only in this answer")


class WebhookList(BaseModel):
    items: list[Webhook]


class DeliveryAttempt(BaseModel):
    id: str
    event_id: str
    seq: int
    attempt: int
    outcome: Literal["succeeded", "retrying", "failed"]
    status_code: int | None
    duration_ms: int
    error: str | None
    started_at: datetime


class DeliveryAttemptList(BaseModel):
    items: list[DeliveryAttempt]
