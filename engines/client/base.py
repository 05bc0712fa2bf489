"""What the sync and the async client share: their settings, and the connection."""

from __future__ import annotations

import abc
from typing import Any

import httpx

from engines.client.events import EVENTS_READ_TIMEOUT
from engines.client.protocol import UPLOAD_THRESHOLD, Connection
from engines.client.retry import RetryPolicy

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Per network operation (connect, each read, each write), not per request: a large
upload or download takes as long as it takes while bytes keep moving."""


class ClientBase(abc.ABC):
    """The routing settings every request carries, and the retry policy.

    `workspace`, `surface` and `app` are optional lineage headers; `retry`
    replaces the default policy (5 attempts, 0.25 s doubling to 8 s);
    `transport` hands httpx a transport of your own (a proxy, a mock in tests).
    """

    def __init__(self, base_url: str, token: str, tenant: str, env: str, project: str, *,
                 workspace: str | None = None, surface: str | None = None,
                 app: str | None = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
                 upload_threshold: int | None = UPLOAD_THRESHOLD) -> None:
        self._conn = Connection(base_url, token, tenant, env, project, workspace, surface, app,
                                retry or RetryPolicy(), upload_threshold)
        self._timeout = httpx.Timeout(timeout)
        self._stream_timeout = httpx.Timeout(self._timeout.connect, read=EVENTS_READ_TIMEOUT,
                                             write=self._timeout.write,
                                             connect=self._timeout.connect)
        self._http = self._open(transport)

    @abc.abstractmethod
    def _open(self, transport: Any) -> Any:
        """The httpx client (sync or async) every request goes through."""

    @property
    def connection(self) -> Connection:
        return self._conn
