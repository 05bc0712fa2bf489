"""What a `/content` request (or a signed URL) asks for: `?w=&h=&format=&q=`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

_UNBOUNDED = 1 << 30


FormatName = Literal["webp", "png", "jpeg", "auto"]


class VariantQuery(BaseModel):
    """What a client asked for; checked against the settings by `resolve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    w: int | None = Field(default=None, ge=1, le=_UNBOUNDED)
    h: int | None = Field(default=None, ge=1, le=_UNBOUNDED)
    format: FormatName | None = None
    q: int | None = Field(default=None, ge=1, le=100)

    def params(self) -> dict[str, str]:
        """The query parameters that ask for this variant, as strings (URL and signature)."""
        return {name: str(value) for name, value in self.model_dump().items()
                if value is not None}


async def variant_query(w: Annotated[int | None, Query(ge=1, le=_UNBOUNDED)] = None,
                  h: Annotated[int | None, Query(ge=1, le=_UNBOUNDED)] = None,
                  format: FormatName | None = None,
                  q: Annotated[int | None, Query(ge=1, le=100)] = None) -> VariantQuery | None:
    """Dependency: the variant a `/content` request asks for, None for the stored bytes.

    Async so that FastAPI calls it on the loop, not through a thread-pool hop."""
    if w is None and h is None and format is None and q is None:
        return None
    return VariantQuery(w=w, h=h, format=format, q=q)
