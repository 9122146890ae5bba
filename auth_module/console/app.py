"""The console's HTTP face: the page's three files and the JSON API of CONTRACT.md §9.

Every ``/api/`` request carries ``Authorization: Bearer KEY``, checked against the key file
on each request: no key, an unknown, revoked or expired one is 401; a ``viewer`` asking to
change anything is 403. The live stream (``/api/v1/events``) is read by the page with
``fetch()`` and that same header rather than with ``EventSource``, which cannot send
headers: a key in a URL would end up in histories, proxies' logs and Referer headers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..types import WithdrawAuthorizationRequest, WithdrawAuthorizationResult
from .allowlist import EntryError
from .keys import KeyError_, KeyInfo, create_key, revoke_key

if TYPE_CHECKING:
    from .server import Console

MAX_BODY = 16 * 1024
REGISTER_WAIT_S = 60.0
KEEPALIVE_S = 15.0
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; connect-src 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/console.js": ("console.js", "text/javascript; charset=utf-8"),
          "/console.css": ("console.css", "text/css; charset=utf-8")}


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="auth-module console"'} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def build_app(console: Console) -> Any:
    keys = console.keys

    def who(request: Request, write: bool = False) -> KeyInfo:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        info = keys.check(key.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            raise _Denied(401, "a valid access key is required" if header else "no access key")
        if write and info.role != "admin":
            raise _Denied(403, "this key may only read; changes need an admin key")
        return info

    def endpoint(write: bool = False) -> Callable[[Callable[..., Awaitable[Response]]],
                                                  Callable[[Request], Awaitable[Response]]]:
        def wrap(fn: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                try:
                    info = who(request, write)
                    return await fn(request, info)
                except _Denied as exc:
                    return _error(exc.status, exc.message)
            return handle
        return wrap

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _Denied(413, "body too large")
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise _Denied(400, "the body is not JSON") from None

    def ready() -> None:
        if not console.module.ready.is_set():
            raise _Denied(503, "the module is still starting")

    def editor() -> Any:
        if console.editor is None:
            raise _Denied(409, "this station has no allow_list validator")
        return console.editor

    # --- reading ----------------------------------------------------------------------------

    @endpoint()
    async def me(_request: Request, info: KeyInfo) -> Response:
        return JSONResponse({"name": info.name, "role": info.role})

    @endpoint()
    async def station(_request: Request, info: KeyInfo) -> Response:
        return JSONResponse(console.fresh_state())

    @endpoint()
    async def events(request: Request, info: KeyInfo) -> Response:
        key = request.headers["authorization"].partition(" ")[2].strip()
        return StreamingResponse(_stream(console, key), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @endpoint()
    async def history(_request: Request, info: KeyInfo) -> Response:
        return JSONResponse({"cards": console.view.history()})

    @endpoint()
    async def history_csv(_request: Request, info: KeyInfo) -> Response:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(
            console.view.history_rows(full_tokens=info.role == "admin"))
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="card-history.csv"'})

    @endpoint()
    async def allow_list(_request: Request, info: KeyInfo) -> Response:
        entries = await run_in_threadpool(editor().entries)
        return JSONResponse({"file": editor().path.name, "tokens": entries})

    # --- changing (admin) -----------------------------------------------------------------

    @endpoint(write=True)
    async def allow_list_put(request: Request, info: KeyInfo) -> Response:
        id_token = request.path_params["id_token"].strip()
        ed = editor()
        if not id_token or len(id_token) > 36:
            raise _Denied(400, "id_token must be 1 to 36 characters")
        body = await body_of(request)
        try:
            created, entry = await run_in_threadpool(ed.put, id_token, body)
        except EntryError as exc:
            raise _Denied(400, str(exc)) from None
        console.poke()
        return JSONResponse(entry, status_code=201 if created else 200)

    @endpoint(write=True)
    async def allow_list_delete(request: Request, info: KeyInfo) -> Response:
        ed = editor()
        if not await run_in_threadpool(ed.delete, request.path_params["id_token"]):
            raise _Denied(404, "no such token in the allow list")
        console.poke()
        return Response(status_code=204)

    @endpoint(write=True)
    async def register_next(_request: Request, info: KeyInfo) -> Response:
        ed = editor()
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()

        def on_token(value: str) -> None:
            if not got.done():
                got.set_result(value)

        console.view.token_listeners.append(on_token)
        try:
            value = await asyncio.wait_for(got, REGISTER_WAIT_S)
        except asyncio.TimeoutError:
            return JSONResponse({"id_token": None})
        finally:
            console.view.token_listeners.remove(on_token)
        return JSONResponse({"id_token": value, "known": ed.known(value)})

    @endpoint(write=True)
    async def recent_value(request: Request, info: KeyInfo) -> Response:
        value = console.view.token_value(request.path_params["ref"])
        if value is None:
            raise _Denied(404, "no such recent token (it may have scrolled away)")
        return JSONResponse({"id_token": value})

    @endpoint(write=True)
    async def withdraw(request: Request, info: KeyInfo) -> Response:
        ready()
        evse_id = request.path_params["evse_id"]
        result = await run_in_threadpool(console.module.handler.withdraw_authorization,
                                         WithdrawAuthorizationRequest(evse_id=evse_id))
        console.poke()
        status = 404 if result == WithdrawAuthorizationResult.EvseNotFound else 200
        return JSONResponse({"result": result.value}, status_code=status)

    @endpoint(write=True)
    async def cancel_reservation(request: Request, info: KeyInfo) -> Response:
        ready()
        rid = request.path_params["reservation_id"]
        cancelled = await run_in_threadpool(console.module.handler.cancel_reservation, rid)
        console.poke()
        return JSONResponse({"cancelled": cancelled}, status_code=200 if cancelled else 404)

    @endpoint(write=True)
    async def keys_list(_request: Request, info: KeyInfo) -> Response:
        listed = await run_in_threadpool(keys.keys)
        return JSONResponse({"keys": [k.public() for k in listed]})

    @endpoint(write=True)
    async def keys_create(request: Request, info: KeyInfo) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict):
            raise _Denied(400, "the body must be a JSON object with name and role")
        try:
            key, made = await run_in_threadpool(
                create_key, keys.path, str(body.get("name", "")), str(body.get("role", "")),
                body.get("expires") or None)
        except KeyError_ as exc:
            raise _Denied(400, str(exc).replace("--", "")) from None
        return JSONResponse({**made.public(), "key": key}, status_code=201)

    @endpoint(write=True)
    async def keys_revoke(request: Request, info: KeyInfo) -> Response:
        try:
            await run_in_threadpool(revoke_key, keys.path, request.path_params["name"])
        except KeyError_ as exc:
            raise _Denied(404, str(exc)) from None
        return Response(status_code=204)

    @endpoint(write=True)
    async def demo(request: Request, info: KeyInfo) -> Response:
        if not console.settings.demo_controls:
            raise _Denied(404, "not a demo station")
        ready()
        action = request.path_params.get("action", "swipe")
        try:
            if action == "swipe":
                body = await body_of(request)
                value = str((body or {}).get("id_token", "")).strip()
                if not value or len(value) > 36:
                    raise _Denied(400, "id_token must be 1 to 36 characters")
                await run_in_threadpool(console.demo_swipe, value)
            elif action in ("plug-in", "plug-out"):
                await run_in_threadpool(console.demo_plug, request.path_params["evse_id"],
                                        action.replace("-", "_"))
            else:
                raise _Denied(404, "no such demo action")
        except _Denied:
            raise
        except Exception as exc:  # noqa: BLE001 - a simulator that is not there
            raise _Denied(502, f"the simulator did not answer: {type(exc).__name__}") from None
        return JSONResponse({"done": action}, status_code=202)

    async def static(request: Request) -> Response:
        name, media = STATIC[request.url.path]
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(body, media_type=media)

    routes = [
        Route("/", static), Route("/console.js", static), Route("/console.css", static),
        Route("/api/v1/me", me),
        Route("/api/v1/station", station),
        Route("/api/v1/events", events),
        Route("/api/v1/history", history),
        Route("/api/v1/history.csv", history_csv),
        Route("/api/v1/allow-list", allow_list),
        Route("/api/v1/allow-list/register-next", register_next, methods=["POST"]),
        Route("/api/v1/allow-list/{id_token:str}", allow_list_put, methods=["PUT"]),
        Route("/api/v1/allow-list/{id_token:str}", allow_list_delete, methods=["DELETE"]),
        Route("/api/v1/recent-tokens/{ref:str}", recent_value),
        Route("/api/v1/evses/{evse_id:int}/withdraw", withdraw, methods=["POST"]),
        Route("/api/v1/reservations/{reservation_id:int}", cancel_reservation,
              methods=["DELETE"]),
        Route("/api/v1/keys", keys_list, methods=["GET"]),
        Route("/api/v1/keys", keys_create, methods=["POST"]),
        Route("/api/v1/keys/{name:str}", keys_revoke, methods=["DELETE"]),
        Route("/api/v1/demo/swipe", demo, methods=["POST"]),
        Route("/api/v1/demo/evses/{evse_id:int}/{action:str}", demo, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: lambda _r, exc: _error(exc.status_code, str(exc.detail))})
    return _secured(app)


def _secured(app: Any) -> Any:
    """Every answer gets the security headers (a pure ASGI wrapper: streams stay streams)."""
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)
        await app(scope, receive, send_with_headers)
    return wrapped


async def _stream(console: Console, key: str) -> AsyncIterator[bytes]:
    """The station's state each time it changes; ``logout`` once the key stops counting."""
    hub = console.hub
    wake = asyncio.Event()
    hub.waiters.add(wake)
    sent, idle = -1, 0.0
    try:
        yield b"retry: 2000\n\n"
        while not hub.closing:
            if console.keys.check(key) is None:
                yield b"event: logout\ndata: {}\n\n"
                return
            if hub.version != sent:
                sent = hub.version
                idle = 0.0
                yield b"event: station\ndata: " + hub.data + b"\n\n"
            elif idle >= KEEPALIVE_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except asyncio.TimeoutError:
                idle += 1.0
    finally:
        hub.waiters.discard(wake)
