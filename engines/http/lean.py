"""Lean dispatch for the hot routes, with FastAPI's route kept as the one rule book.

FastAPI's per-request dependency solving and parameter validation cost more
CPU than a whole content fetch from a local disk. A route registered with
`@lean(arguments)` keeps its FastAPI route (so its OpenAPI description, its
422s and its error envelope are unchanged) but first tries `arguments`:

- `arguments(request)` returns the endpoint's keyword arguments only for a
  request whose path and query are plainly valid (a subset of what FastAPI
  accepts, checked with the same patterns), resolving auth and the runtime
  through the same dependency functions the FastAPI route declares;
- it returns None for anything else (a query parameter, an odd id, a number
  with a sign or leading zero), and the request takes the full FastAPI path,
  which answers exactly as it always did.

So no rule exists twice: auth, scope and limits live in the dependency and
service functions both paths call, and every 4xx that validation produces
comes from FastAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engines.http.openapi import AuthenticatedRoute

Arguments = Callable[[Request], Awaitable[dict[str, Any] | None]]
_ARGUMENTS: dict[Callable[..., Any], Arguments] = {}


def lean(arguments: Arguments) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give an async endpoint a lean path; put it below the `@router.<method>` decorator."""
    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{endpoint.__name__}: a lean endpoint must be async")
        _ARGUMENTS[endpoint] = arguments
        return endpoint

    return register


class LeanRoute(AuthenticatedRoute):
    """An AuthenticatedRoute whose `@lean` endpoint skips FastAPI's solving when it can."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        full = super().get_route_handler()
        arguments = _ARGUMENTS.get(self.endpoint)
        if arguments is None:
            return full
        endpoint = self.endpoint
        wants_request = "request" in inspect.signature(endpoint).parameters

        async def handler(request: Request) -> Response:
            kwargs = await arguments(request)
            if kwargs is None:
                return await full(request)
            if wants_request:
                kwargs["request"] = request
            return await endpoint(**kwargs)

        return handler
