"""Routing of API paths to handlers, and the answers in PVE's shape.

Paths are matched segment by segment, as PVE's router does: a `{param}` is exactly one segment, so a
volume ID with a slash must be percent-encoded by the client (`local:iso%2Fx.iso`). Unknown paths or
methods answer 501 "Method 'GET /x' not implemented".
"""
import traceback
from dataclasses import dataclass, field
from urllib.parse import unquote

from .node import ApiError
from .params import ParamError, verify

ROUTES = []


@dataclass
class Route:
    method: str
    template: str
    segments: tuple
    spec: dict
    handler: object


@dataclass
class Call:
    """What a handler gets: the simulator, the checked and typed parameters, and who asks."""
    sim: object
    params: dict
    user: str
    via: str                        # "api" (HTTPS) or "cli" (node tools on the control socket)
    upload: bytes = None            # the file of a multipart upload


@dataclass
class Result:
    """Data plus PVE's extra top-level answer attributes (`total` for task logs)."""
    data: object
    extra: dict = field(default_factory=dict)


def route(method, template, spec=None):
    def register(handler):
        segments = tuple(part for part in template.split("/") if part)
        ROUTES.append(Route(method, template, segments, spec or {}, handler))
        return handler
    return register


def find(method, path):
    """-> (Route, path parameters) or ApiError 501."""
    parts = [unquote(part) for part in path.split("/") if part]
    for candidate in ROUTES:
        if candidate.method != method or len(candidate.segments) != len(parts):
            continue
        found = {}
        for expected, actual in zip(candidate.segments, parts):
            if expected.startswith("{"):
                found[expected[1:-1]] = actual
            elif expected != actual:
                break
        else:
            return candidate, found
    raise ApiError(f"Method '{method} /api2/json{path}' not implemented", status=501)


def error_body(status, message, errors=None):
    body = {"data": None, "message": message if message.endswith("\n") else message + "\n"}
    if errors:
        body["errors"] = errors
    return body


def reason_phrase(message):
    """PVE puts the error message into the HTTP status line; it must be one latin-1 line there."""
    line = " ".join(message.strip().splitlines()) or "error"
    return line.encode("latin-1", "replace").decode("latin-1")[:400]


def dispatch(sim, method, path, raw_params, user, via, upload=None):
    """-> (status, reason, body, template). Never raises for API-level failures."""
    template = None
    try:
        handler_route, path_params = find(method, path)
        template = handler_route.template
        merged = dict(raw_params)
        merged.update(path_params)
        try:
            params = verify(handler_route.spec, merged)
        except ParamError as error:
            message = "Parameter verification failed."
            return 400, message, error_body(400, message, error.errors), template
        data = handler_route.handler(Call(sim, params, user, via, upload))
        body = {"data": data.data, **data.extra} if isinstance(data, Result) else {"data": data}
        return 200, "OK", body, template
    except ApiError as error:
        return error.status, reason_phrase(error.message), error_body(error.status, error.message,
                                                                      error.errors), template
    except Exception as error:   # a simulator bug: answer like PVE does for an unexpected die, and say so
        traceback.print_exc()
        message = f"pvesim internal error: {error!r}"
        return 500, reason_phrase(message), error_body(500, message), template
