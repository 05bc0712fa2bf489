"""The route table has no shadowing: each route's own path reaches that route.

FastAPI tries the included routers in order, first full match wins. The app
includes the hot canvas routes first (`canvas_artifacts.router.hot`) for speed,
and relies on order elsewhere (the events and lifecycle routes before
`/canvas/{canvas_id}/artifacts/{artifact_id}`). A reordering that made one route
swallow another's requests would fail here, before any client sees a 404 or
422 from the wrong handler.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from conftest import Stack

_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")


def _in_dispatch_order(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route as FastAPI tries it: included routers in place, in order."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _in_dispatch_order(inner.routes)
        else:
            yield route


def _sample(path: str) -> str:
    """A concrete path for a route: every parameter a plain id-shaped value."""
    return _PARAM.sub(lambda m: f"x_{m[1]}", path)


def _first_match(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


def test_every_route_is_reached_by_its_own_path(local: Stack) -> None:
    routes = list(_in_dispatch_order(local.client.app.router.routes))  # type: ignore[attr-defined]
    api_routes = [r for r in routes if isinstance(r, APIRoute)]
    assert len(api_routes) > 30
    for route in api_routes:
        for method in route.methods:
            found = _first_match(routes, method, _sample(route.path))
            assert found is route, (f"{method} {route.path} is answered by "
                                    f"{getattr(found, 'path', found)}")


def test_the_hot_routes_are_tried_first(local: Stack) -> None:
    routes = [r for r in _in_dispatch_order(local.client.app.router.routes)  # type: ignore[attr-defined]
              if isinstance(r, APIRoute)]
    first = {route.name for route in routes[:4]}
    assert first == {"get_artifact_content", "create_preview", "create_replay", "create_audit"}


def test_a_shadowing_order_is_caught() -> None:
    """The check itself: a catch-all route before a literal one is reported."""
    catch_all = APIRoute("/canvas/{canvas_id}/artifacts/{artifact_id}", lambda: None,
                         methods=["GET"])
    literal = APIRoute("/canvas/{canvas_id}/artifacts/events", lambda: None, methods=["GET"])
    assert _first_match([catch_all, literal], "GET", _sample(literal.path)) is catch_all
    assert _first_match([literal, catch_all], "GET", _sample(literal.path)) is literal
