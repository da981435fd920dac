"""The agent web application: login, agent commands, WebSocket pops, supervisor view.

Routes (JSON unless said otherwise):

- ``POST /api/session {username, password}`` sign in (cookie + token; 429 with Retry-After
  after repeated failures for a username or an address), ``GET`` who am I,
  ``DELETE`` sign out
- ``POST /api/agent/login | logout | ready``, ``POST /api/agent/pause {reason}``
- ``GET /api/agent/current`` the call and pop on the agent's screen (page reload)
- ``POST /api/interactions/{call_id}/disposition {disposition, notes}``
- ``POST /api/customers {name, numbers, tier, email, notes, call_id}`` ("unknown caller")
- ``GET /api/supervisor/snapshot`` (supervisor, admin)
- ``GET /ws`` WebSocket, authenticated by the session cookie or a Bearer header
- ``GET /healthz`` no sign-in: ok / degraded and why; 200 when ctiserver routes calls, 503
  when it cannot (``HealthReport``)
- ``/`` the agent page, ``/supervisor`` the supervisor page, static files of ``screenpop/``
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from ctiserver.web.auth import COOKIE, Session, Sessions, SignInThrottle
from ctiserver.web.hub import SUPERVISING, WebSocketHub
from ctiserver.web.ports import (
    AgentControl,
    AgentControlError,
    Health,
    Screens,
    StoreError,
    WebStore,
)

log = logging.getLogger(__name__)

# a link to the repository's screenpop/, so that `pip install .` ships the pages too
DEFAULT_STATIC = Path(__file__).resolve().parent / "screenpop"
TIERS = ("standard", "silver", "gold", "platinum")

STORE = web.AppKey[WebStore]("store")
POPS: web.AppKey[Screens] = web.AppKey("pops")
CONTROL = web.AppKey[AgentControl]("control")
HUB: web.AppKey[WebSocketHub] = web.AppKey("hub", WebSocketHub)
HEALTH = web.AppKey[Health]("health")
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
SECURE: web.AppKey[bool] = web.AppKey("secure_cookie", bool)
THROTTLE: web.AppKey[tuple[SignInThrottle, SignInThrottle]] = web.AppKey("throttle", tuple)
# failed sign-ins before a lockout: per username, and per client address (higher: a call
# center's agents often share one public address, and mistype their passwords)
USER_FAILURES, ADDRESS_FAILURES = 5, 30


def make_app(
    *,
    store: WebStore,
    pops: Screens,
    control: AgentControl,
    hub: WebSocketHub,
    static_dir: Path | None = None,
    session_ttl: float = 12 * 3600,
    secure_cookie: bool = False,
    health: Health | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_same_origin, _errors], client_max_size=64 * 1024)
    app[STORE], app[POPS], app[CONTROL], app[HUB] = store, pops, control, hub
    app[SESSIONS] = Sessions(session_ttl, store=store)
    app[SECURE] = secure_cookie
    app[THROTTLE] = (SignInThrottle(USER_FAILURES), SignInThrottle(ADDRESS_FAILURES))
    static = static_dir or DEFAULT_STATIC
    r = app.router
    r.add_post("/api/session", sign_in)
    r.add_get("/api/session", whoami)
    r.add_delete("/api/session", sign_out)
    for action in ("login", "logout", "ready", "pause"):
        r.add_post(f"/api/agent/{action}", agent_command)
    r.add_get("/api/agent/current", current)
    r.add_post("/api/interactions/{call_id}/disposition", disposition)
    r.add_post("/api/customers", create_customer)
    r.add_get("/api/supervisor/snapshot", snapshot)
    r.add_get("/ws", websocket)
    if health is not None:
        app[HEALTH] = health
        r.add_get("/healthz", healthz)

    r.add_get("/", _file(static / "index.html"))
    r.add_get("/supervisor", _file(static / "supervisor.html"))
    r.add_static("/static/", static, show_index=False)

    async def restore_sessions(app: web.Application) -> None:
        restored = await app[SESSIONS].restore()
        if restored:
            log.info("web: %d signed-in page(s) kept from before the restart", restored)

    async def on_shutdown(_: web.Application) -> None:
        await hub.close()

    app.on_startup.append(restore_sessions)

    app.on_shutdown.append(on_shutdown)
    return app


async def healthz(request: web.Request) -> web.Response:
    report = request.app[HEALTH].health()
    return web.json_response(report.to_json(), status=200 if report.routing else 503,
                             headers={"Cache-Control": "no-store"})


def _file(path: Path) -> Any:
    async def handler(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


# ------------------------------------------------------------------ plumbing


@web.middleware
async def _same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site state changes and WebSocket upgrades (cookie auth + CSRF)."""
    origin = request.headers.get("Origin")
    unsafe = request.method not in ("GET", "HEAD", "OPTIONS") or request.path == "/ws"
    if unsafe and origin and origin != "null" and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(text="cross-origin request refused")
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentControlError as exc:
        return web.json_response({"error": str(exc)}, status=409)


def _session(request: web.Request) -> Session:
    session = request.app[SESSIONS].from_request(request)
    if session is None:
        raise web.HTTPUnauthorized(
            text='{"error": "sign in first"}', content_type="application/json"
        )
    return session


def _agent_id(request: web.Request) -> str:
    user = _session(request).user
    if not user.agent_id:
        raise web.HTTPForbidden(
            text='{"error": "this account is not an agent"}', content_type="application/json"
        )
    return user.agent_id


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "invalid JSON"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected an object"}', content_type="application/json"
        )
    return body


def _text(body: dict[str, Any], key: str, limit: int, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise web.HTTPBadRequest(
            text=f'{{"error": "{key} must be text"}}', content_type="application/json"
        )
    return value.strip()[:limit]


# ---------------------------------------------------------------- handlers


async def sign_in(request: web.Request) -> web.Response:
    body = await _json(request)
    username, password = _text(body, "username", 64), str(body.get("password") or "")
    by_user, by_address = request.app[THROTTLE]
    keys = ((by_user, username.lower()), (by_address, request.remote or "?"))
    wait = max(throttle.retry_after(key) for throttle, key in keys)
    if wait > 0:
        return web.json_response(
            {"error": "too many failed sign-ins: try again later"}, status=429,
            headers={"Retry-After": str(int(wait) + 1)})
    user = await request.app[STORE].authenticate(username, password)
    if user is None:
        log.info("web: sign-in refused for %r from %s", username, request.remote)
        for throttle, key in keys:
            if throttle.failed(key):
                log.warning("web: sign-in for %s locked for %.0f s after %d failures (%r from "
                            "%s)", "this user" if throttle is by_user else "this address",
                            throttle.lockout, throttle.limit, username, request.remote)
        return web.json_response({"error": "wrong username or password"}, status=401)
    by_user.succeeded(username.lower())
    session = await request.app[SESSIONS].open(user)
    log.info("web: %s (agent %s) signed in from %s", user.username, user.agent_id, request.remote)
    response = web.json_response({"user": user.to_dict(), "token": session.token})
    response.set_cookie(
        COOKIE,
        session.token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SECURE],
        max_age=int(request.app[SESSIONS].ttl),
        path="/",
    )
    return response


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"user": _session(request).user.to_dict()})


async def sign_out(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].from_request(request)
    if session is not None:
        await request.app[SESSIONS].close(session)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def agent_command(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    action = request.path.rsplit("/", 1)[-1]
    control: AgentControl = request.app[CONTROL]
    if action == "pause":
        reason = _text(await _json(request), "reason", 64) or "pause"
        await control.pause(agent_id, reason)
    elif action == "login":
        await control.login(agent_id)
    elif action == "logout":
        await control.logout(agent_id)
    else:
        await control.ready(agent_id)
    log.info("web: agent %s %s", agent_id, action)
    return web.json_response({"ok": True, **_agent_view(request, agent_id)})


def _agent_view(request: web.Request, agent_id: str) -> dict[str, Any]:
    control: AgentControl = request.app[CONTROL]
    agent = (control.snapshot().get("agents") or {}).get(agent_id) or {}
    return {
        "agent_id": agent_id,
        "state": agent.get("state", "logged_out"),
        "reason": agent.get("reason"),
        "call": control.current_call(agent_id),
        "pop": request.app[POPS].current(agent_id),
    }


async def current(request: web.Request) -> web.Response:
    return web.json_response(_agent_view(request, _agent_id(request)))


async def disposition(request: web.Request) -> web.Response:
    session = _session(request)
    call_id = request.match_info["call_id"][:64]
    body = await _json(request)
    code = _text(body, "disposition", 64)
    notes = _text(body, "notes", 4000)
    if not code:
        return web.json_response({"error": "disposition is required"}, status=400)
    user, pops = session.user, request.app[POPS]
    agent_id = user.agent_id
    if agent_id is None or not pops.shown_to(agent_id, call_id):
        allowed = user.role in SUPERVISING
        if not allowed and agent_id is not None:
            try:
                rec = await request.app[STORE].get_interaction(call_id)
            except Exception:  # noqa: BLE001 - database down: only the screen can prove it
                rec = None
            allowed = rec is not None and rec.agent_id == agent_id
        if not allowed:
            return web.json_response({"error": "not your call"}, status=403)
    stored = await pops.dispose(call_id, agent_id or user.username, code, notes)
    log.info("web: call=%s agent=%s disposition %r stored=%s", call_id, agent_id, code, stored)
    return web.json_response({"ok": True, "stored": stored}, status=200 if stored else 202)


async def create_customer(request: web.Request) -> web.Response:
    session = _session(request)
    body = await _json(request)
    name = _text(body, "name", 200)
    raw_numbers = body.get("numbers") or ([body["number"]] if body.get("number") else [])
    if not name:
        return web.json_response({"error": "name is required"}, status=400)
    if not isinstance(raw_numbers, list) or not all(isinstance(n, str) for n in raw_numbers):
        return web.json_response({"error": "numbers must be a list of text"}, status=400)
    tier = _text(body, "tier", 32, "standard") or "standard"
    if tier not in TIERS:
        return web.json_response({"error": f"tier: one of {', '.join(TIERS)}"}, status=400)
    store = request.app[STORE]
    try:
        customer = await store.create_customer(
            name,
            raw_numbers[:10],
            tier=tier,
            email=_text(body, "email", 200) or None,
            notes=_text(body, "notes", 4000),
        )
    except StoreError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    call_id = _text(body, "call_id", 64)
    if call_id:
        await request.app[POPS].link_customer(call_id, customer.to_dict())
    log.info(
        "web: customer %s created by %s (call %s)",
        customer.id,
        session.user.username,
        call_id or "-",
    )
    return web.json_response({"customer": customer.to_dict()}, status=201)


async def snapshot(request: web.Request) -> web.Response:
    session = _session(request)
    if session.user.role not in SUPERVISING:
        return web.json_response({"error": "supervisors only"}, status=403)
    data = request.app[CONTROL].snapshot()
    data = {**data, "connected": sorted(request.app[HUB].connected_agents())}
    return web.json_response(data, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def websocket(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSIONS].from_request(request)
    if session is None:
        log.info("ws: unauthenticated connection refused from %s", request.remote)
        raise web.HTTPUnauthorized(text="sign in first")
    user = session.user
    hello: dict[str, Any] = {"user": user.to_dict()}
    if user.agent_id:
        hello.update(_agent_view(request, user.agent_id))
    return await request.app[HUB].serve(request, user, hello)
