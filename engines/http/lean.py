"""Lean dispatch for the hot routes, built from the FastAPI route's own declarations.

FastAPI's per-request dependency solving and parameter validation cost more
CPU than a whole content fetch from a local disk. A route whose endpoint is
marked `@lean` keeps its FastAPI route (its OpenAPI description, its 422s and
its error envelope are unchanged), and `LeanRoute` compiles, once, a checker
from the route's parsed `dependant` (the same object FastAPI's handler is
built from):

- the path and query parameters of the endpoint and of its dependencies, each
  with the bounds it declares (`pattern`, `max_length`/`min_length`,
  `ge`/`le`/`gt`/`lt`, `Literal` members);
- the dependency callables themselves (`reader`, `writer`, `get_runtime`,
  `variant_query`...), called in FastAPI's order with the request and their
  parsed parameters.

A request is taken on the lean path only when it is plainly valid: every
path parameter and every query parameter passes its declaration in a plain
spelling (ints without sign or leading zero, ASCII strings without `%`/`+`
escapes), each query parameter is known and given at most once, and no
dependency of the route is overridden in `app.dependency_overrides`.
Anything else takes the full FastAPI path, which answers exactly as it
always did. A route the checker cannot express (header, cookie or body
parameters, a sync or generator dependency, a `Response` parameter, a type
other than str, int or a Literal of strings) simply never leans.

So no rule exists twice: what a route accepts and which auth it needs are
read from its declaration, and every 4xx that validation produces comes from
FastAPI. `app.state.lean_routes` (setting LEAN_ROUTES) switches the lean path
off, which the parity test uses to compare both paths.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from fastapi import routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from engines.http.openapi import AuthenticatedRoute

_LEAN: set[Callable[..., Any]] = set()
_PLAIN_INT = re.compile(r"0|[1-9][0-9]{0,17}")
"""A number as a client would plainly write it, small enough to convert cheaply."""
_PLAIN_PART = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)=([A-Za-z0-9._~-]*)")
"""One query parameter needing no percent-decoding."""

Convert = Callable[[str], Any]
_INVALID = object()


def lean(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an async endpoint for the lean path; put it below `@router.<method>`."""
    if not inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: a lean endpoint must be async")
    _LEAN.add(endpoint)
    return endpoint


def _bounds(metadata: list[Any]) -> Callable[[Any], bool] | None:
    """A test of the declared numeric and length bounds; None if one is not understood."""
    tests: list[Callable[[Any], bool]] = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            tests.append(lambda v, b=item.ge: v >= b)
        elif isinstance(item, annotated_types.Gt):
            tests.append(lambda v, b=item.gt: v > b)
        elif isinstance(item, annotated_types.Le):
            tests.append(lambda v, b=item.le: v <= b)
        elif isinstance(item, annotated_types.Lt):
            tests.append(lambda v, b=item.lt: v < b)
        elif isinstance(item, annotated_types.MaxLen):
            tests.append(lambda v, b=item.max_length: len(v) <= b)
        elif isinstance(item, annotated_types.MinLen):
            tests.append(lambda v, b=item.min_length: len(v) >= b)
        else:
            fields = getattr(item, "__dict__", {"unknown": item})
            rules = {key: value for key, value in fields.items() if value is not None}
            if set(rules) - {"pattern"}:
                return None  # strictness, multiple_of...: left to FastAPI
            if "pattern" in rules:
                tests.append(lambda v, p=re.compile(rules["pattern"]): p.search(v) is not None)
    return _all_of(tests)


def _all_of(tests: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """One test passing when all of `tests` pass (no generator per call: this runs for
    every parameter of every lean request)."""
    if not tests:
        return lambda value: True
    if len(tests) == 1:
        return tests[0]

    def check(value: Any) -> bool:
        for test in tests:  # noqa: SIM110 - all() would build a generator per call
            if not test(value):
                return False
        return True
    return check


def _converter(annotation: Any, metadata: list[Any]) -> Convert | None:
    """str -> value, or _INVALID when not plainly valid; None if the type is not plain."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    check = _bounds(metadata)
    if check is None:
        return None
    if annotation is int:
        def to_int(raw: str) -> Any:
            if not _PLAIN_INT.fullmatch(raw):
                return _INVALID
            value = int(raw)
            return value if check(value) else _INVALID
        return to_int
    if annotation is str:
        def to_str(raw: str) -> Any:
            plain = raw.isascii() and raw.isprintable()
            return raw if plain and check(raw) else _INVALID
        return to_str
    if get_origin(annotation) is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        members = frozenset(get_args(annotation))
        return lambda raw: raw if raw in members else _INVALID
    return None


@dataclass(frozen=True)
class _Call:
    """The endpoint or one dependency: how to build its keyword arguments."""

    call: Callable[..., Any]
    name: str | None
    request_name: str | None
    subs: tuple[_Call, ...]
    path: tuple[tuple[str, Convert], ...]
    query: tuple[tuple[str, str, Convert, Any], ...]
    """(keyword, query name, converter, default)"""

    def walk(self) -> list[_Call]:
        return [call for sub in self.subs for call in sub.walk()] + [self]


def _compile(dependant: Dependant) -> _Call | None:
    """`dependant` as a _Call; None if some part of it cannot be checked plainly."""
    if (dependant.header_params or dependant.cookie_params or dependant.body_params
            or dependant.response_param_name or dependant.background_tasks_param_name
            or dependant.websocket_param_name or dependant.http_connection_param_name
            or dependant.security_scopes_param_name):
        return None
    subs = []
    for sub in dependant.dependencies:
        compiled = _compile(sub) if inspect.iscoroutinefunction(sub.call) else None
        if compiled is None:
            return None
        subs.append(compiled)
    path = []
    for field in dependant.path_params:
        convert = _converter(field.field_info.annotation, field.field_info.metadata)
        if convert is None:
            return None
        path.append((field.name, convert))
    query = []
    for field in dependant.query_params:
        convert = _converter(field.field_info.annotation, field.field_info.metadata)
        if convert is None:
            return None
        default = _INVALID if field.field_info.is_required() else field.get_default()
        query.append((field.name, field.alias, convert, default))
    return _Call(dependant.call, dependant.name, dependant.request_param_name,  # type: ignore[arg-type]
                 tuple(subs), tuple(path), tuple(query))


def _plain_query(raw: bytes, known: frozenset[str]) -> dict[str, str] | None:
    """The query as name -> value when each part is plain, known and given once."""
    if not raw:
        return {}
    query: dict[str, str] = {}
    for part in raw.split(b"&"):
        match = _PLAIN_PART.fullmatch(part)
        if match is None:
            return None
        name = match[1].decode()
        if name in query or name not in known:
            return None
        query[name] = match[2].decode()
    return query


def _arguments(call: _Call, path: dict[str, Any], query: dict[str, str]) -> dict[str, Any] | None:
    """The parsed parameters of one call; None unless every one is plainly valid."""
    kwargs: dict[str, Any] = {}
    for name, convert in call.path:
        raw = path.get(name)
        value = convert(raw) if isinstance(raw, str) else _INVALID
        if value is _INVALID:
            return None
        kwargs[name] = value
    for name, alias, convert, default in call.query:
        raw = query.get(alias)
        value = default if raw is None else convert(raw)
        if value is _INVALID:
            return None
        kwargs[name] = value
    return kwargs


async def _solve(call: _Call, request: Request, parsed: dict[int, dict[str, Any]]) -> Any:
    """Call `call` as FastAPI would: its dependencies first, in declaration order."""
    kwargs = parsed[id(call)]
    for sub in call.subs:
        kwargs[sub.name] = await _solve(sub, request, parsed)  # type: ignore[index]
    if call.request_name:
        kwargs[call.request_name] = request
    return await call.call(**kwargs)


def _effective(route: APIRoute) -> Any:
    """The route as included in an app: FastAPI builds one handler per inclusion, with
    the including router's dependencies and the app as overrides provider (what
    `APIRoute.get_route_handler` itself reads)."""
    context_var = getattr(routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    return context if context is not None and context.original_route is route else route


class LeanRoute(AuthenticatedRoute):
    """An AuthenticatedRoute whose `@lean` endpoint skips FastAPI's solving when it can."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        full = super().get_route_handler()
        route = _effective(self)
        root = _compile(route.dependant) if self.endpoint in _LEAN else None
        calls = root.walk() if root is not None else []
        callables = [call.call for call in calls[:-1]]
        if root is None or len(set(callables)) != len(callables):
            return full  # a repeated dependency would need FastAPI's per-request cache
        known = frozenset(alias for call in calls for _, alias, _, _ in call.query)
        overridable = frozenset(callables)
        provider = route.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            overrides = getattr(provider, "dependency_overrides", None)
            query = _plain_query(request.scope["query_string"], known)
            if (query is None or not getattr(request.app.state, "lean_routes", True)
                    or (overrides and not overridable.isdisjoint(overrides))):
                return await full(request)
            path = request.path_params
            parsed = {}
            for call in calls:
                kwargs = _arguments(call, path, query)
                if kwargs is None:
                    return await full(request)
                parsed[id(call)] = kwargs
            return await _solve(root, request, parsed)

        return handler
