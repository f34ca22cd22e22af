"""The web pages under ``/ui/``: login, task browser, task view with the review
actions, review queue and dashboard. Server-rendered (Jinja2, autoescaped:
logged content is untrusted), one small script of ours, no inline script,
and a Content-Security-Policy that says so."""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from flywheel.errors import FlywheelError, Forbidden, InvalidInput, NotFound, Unauthorized
from flywheel.records import Step, Task
from flywheel.review import ACTIONS, next_item, review, tools_of
from flywheel.web.charts import dashboard_data, specs
from flywheel.web.replies import read_reply
from flywheel.web.session import COOKIE, UI_SCOPES, current_user

__all__ = ["CSP", "router"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
LOGIN_COOKIE = "flywheel_login"
PAGE_SIZE = 50
STATIC = Path(__file__).parent / "static"

router = APIRouter(prefix="/ui", include_in_schema=False)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 140) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("flywheel.web", "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters["pretty"] = _pretty
    env.filters["short"] = _short
    env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else ""
    env.filters["pct"] = _pct
    env.filters["pts"] = _pts
    env.filters["ci_pts"] = _ci_pts
    env.filters["ci_pct"] = _ci_pct
    return env


def _pct(value: float | None) -> str:
    """A rate as a percentage: 37.5%."""
    return "" if value is None else f"{100 * value:.1f}%"


def _pts(value: float | None) -> str:
    """A difference of rates in points, signed: +12.5."""
    return "" if value is None else f"{100 * value:+.1f}"


def _ci_pts(ci: list[float] | None) -> str:
    """A CI of a difference in points: [-1.9, +36.4]."""
    return "" if not ci or ci[0] is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _ci_pct(ci: list[float] | None) -> str:
    """A CI of a rate in percent: [21.0, 54.3]."""
    return "" if not ci or ci[0] is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _html(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    key, cookie = getattr(request.state, "user", (None, None))
    csrf = request.app.state.signer.csrf(cookie) if cookie else ""
    form_id = secrets.token_hex(12)  # a resubmitted form is the same review (flywheel.review.labels)
    body = (
        _env()
        .get_template(template)
        .render(user=key, csrf=csrf, form_id=form_id, path=request.url.path, **context)
    )
    return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": CSP})


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(303, headers={"Location": "/ui/login?" + urlencode({"next": target})})


def _user(request: Request) -> Any:
    try:
        request.state.user = current_user(request)
    except Unauthorized as exc:
        if request.method == "GET" and "authorization" not in request.headers:
            raise _login_redirect(request) from exc
        raise
    return request.state.user[0]


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form, checked for its CSRF token when the request came with a cookie
    (its origin, type and size were checked before: ``flywheel.server.guard``)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    _, cookie = request.state.user
    if cookie is not None and not request.app.state.signer.check_csrf(cookie, form.get("csrf", "")):
        raise Forbidden("the form's CSRF token is missing or wrong", hint="reload the page and try again")
    return form


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/ui/") and not target.startswith("//") else "/ui/review"


# ------------------------------------------------------------------ login


@router.get("/login")
def login_page(request: Request, next: str | None = None, error: str | None = None) -> HTMLResponse:
    nonce = secrets.token_hex(16)
    response = _html(request, "login.html", next=_safe_next(next), nonce=nonce, error=error)
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", max_age=1800)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    body = (await request.body()).decode("utf-8", errors="replace")
    form = {k: v[-1] for k, v in parse_qs(body).items()}
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(nonce, form.get("nonce", "")):
        raise Forbidden("the login form expired", hint="open /ui/login again")
    target = _safe_next(form.get("next"))
    key = request.app.state.store.find_key(form.get("key", "").strip())
    if key is None or not UI_SCOPES.intersection(key.scopes):
        why = "unknown or revoked key" if key is None else "this key cannot review (needs review or admin)"
        request.state.user = (None, None)
        return _html(request, "login.html", status=401, next=target, nonce=nonce, error=why)
    response = RedirectResponse(target, status_code=303)
    cookie = request.app.state.signer.issue(key.id)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=secure, max_age=12 * 3600)
    response.delete_cookie(LOGIN_COOKIE)
    request.app.state.store.audit(f"key:{key.name}", "ui.login", "api_key", key.id, {})
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    key = _user(request)
    await _form(request)
    _, cookie = request.state.user
    session = request.app.state.signer.read(cookie) if cookie else None
    if session is not None:  # a copy of the cookie stops working too
        request.app.state.store.end_session(
            session.id, session.key_id, session.expires_at, actor=f"key:{key.name}"
        )
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# ------------------------------------------------------------------ tasks


@router.get("")
@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/ui/tasks", status_code=303)


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: give a date like 2026-11-24 or 2026-11-24T10:00") from exc


@router.get("/tasks")
def tasks_page(request: Request) -> HTMLResponse:
    _user(request)
    q = request.query_params
    filters = {
        k: q.get(k, "")
        for k in ("workload", "version", "outcome", "rule", "feedback", "since", "until", "search", "cursor")
    }
    store = request.app.state.store
    try:
        outcome = {"": None, "success": True, "failure": False}[filters["outcome"]]
    except KeyError as exc:
        raise InvalidInput("outcome: success, failure or empty") from exc
    tasks, cursor = store.list_tasks(
        workload=filters["workload"] or None,
        agent_version=filters["version"] or None,
        success=outcome,
        rule=filters["rule"] or None,
        feedback=filters["feedback"] or None,
        since=_when(filters["since"], "since"),
        until=_when(filters["until"], "until"),
        search=filters["search"] or None,
        limit=PAGE_SIZE,
        cursor=filters["cursor"] or None,
    )
    next_query = urlencode({**{k: v for k, v in filters.items() if v}, "cursor": cursor}) if cursor else None
    workloads = _workloads(store)
    return _html(
        request, "tasks.html", tasks=tasks, filters=filters, next_query=next_query, workloads=workloads
    )


def _workloads(store: Any) -> list[str]:
    """Known workloads, from the small tables (never a scan of the tasks)."""
    from sqlalchemy import select, union

    from flywheel.store import tables as t

    query = union(
        select(t.deployments.c.workload), select(t.datasets.c.workload), select(t.cycles.c.workload)
    )
    with store.engine.connect() as conn:
        return sorted(conn.execute(query).scalars())


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else int(value is not None)


def _finite(value: Any) -> float | None:
    """A number the page can format, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        return None
    return number if math.isfinite(number) else None


def _documents(value: Any) -> list[dict[str, Any]]:
    """Retrieved documents as ``{id, score, content}``: an id is a string or None, a
    score a number or None, whatever else the store holds is the content."""
    out = []
    for doc in value if isinstance(value, list) else [] if value is None else [value]:
        if not isinstance(doc, dict):
            out.append({"id": None, "score": None, "content": doc})
            continue
        doc_id, score = doc.get("id"), doc.get("score")
        out.append(
            {
                "id": doc_id if isinstance(doc_id, str) else None if doc_id is None else _short(doc_id),
                "score": _finite(score),
                "content": doc.get("content", doc),
            }
        )
    return out


def _step_view(step: Step) -> dict[str, Any]:
    """What the page shows of a step, read defensively: a step's payload is whatever
    JSON its capture path stored, so every field is checked before it is trusted."""
    data = step.data
    attempt = _finite(data.get("attempt"))
    view: dict[str, Any] = {
        "step": step,
        "data": data,
        "retry": int(attempt) if attempt and attempt > 1 else None,
    }
    if step.kind == "llm_call":
        messages, tools, response = data.get("messages"), data.get("tools"), data.get("response")
        view |= {
            "messages": messages,
            "n_messages": _count(messages),
            "tools": tools,
            "n_tools": _count(tools),
            "response": response,
            "reply": read_reply(response),
        }
    elif step.kind == "retrieval":
        view["documents"] = _documents(data.get("documents"))
    return view


def _responses(task: Task) -> list[dict[str, Any]]:
    """Distinct responses to compare side by side: the agent's output, the model
    calls' replies (their tool calls, else their text, else the response as stored),
    and corrections."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(source: str, value: Any) -> None:
        if value in (None, "", []):
            return
        text = _pretty(value)
        if text not in seen:
            seen.add(text)
            found.append({"source": source, "value": value, "text": text})

    add("agent output", task.output)
    for step in task.steps:
        if step.kind == "llm_call":
            response = step.data.get("response")
            reply = read_reply(response)
            add(f"model response (step {step.seq})", (reply.tool_calls or reply.text) if reply else response)
    for correction in task.corrections:
        add(
            f"correction by {correction.get('author')}",
            correction.get("tool_calls") or correction.get("output"),
        )
    return found


def _current_calls(task: Task) -> list[dict[str, Any]]:
    """The tool calls a correction starts from: the last model call's, else a stub."""
    for step in reversed(task.steps):
        if step.kind == "llm_call":
            reply = read_reply(step.data.get("response"))
            if reply and reply.tool_calls:
                return reply.tool_calls
    return [{"name": next(iter(tools_of(task)), "tool"), "arguments": {}}]


@router.get("/tasks/{task_id}")
def task_page(
    request: Request, task_id: str, queue: str | None = None, done: str | None = None
) -> HTMLResponse:
    _user(request)
    return _task_view(request, task_id, queue=queue, done=done)


def _task_view(
    request: Request,
    task_id: str,
    *,
    queue: str | None,
    done: str | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    store = request.app.state.store
    try:
        task = store.get_task(task_id)
    except NotFound:
        return _html(request, "error.html", status=404, message=f"task {task_id!r} not found")
    steps = [_step_view(step) for step in task.steps]
    documents = [doc for view in steps for doc in view.get("documents", []) if doc["id"] is not None]
    with store.engine.connect() as conn:
        from sqlalchemy import select

        from flywheel.store import tables as t

        item = (
            conn.execute(select(t.review_items).where(t.review_items.c.task_id == task_id)).mappings().first()
        )
    responses = _responses(task)
    return _html(
        request,
        "task.html",
        task=task,
        steps=steps,
        item=dict(item) if item else None,
        documents=documents,
        responses=responses[:2],
        calls=_pretty(_current_calls(task)),
        tools=tools_of(task),
        queue=queue,
        done=done,
        error=error,
        form=form or {},
        actions=list(ACTIONS),
        status=400 if error else 200,
    )


def _payload(action: str, form: dict[str, str], task: Task) -> dict[str, Any]:
    def parsed(name: str) -> Any:
        raw = form.get(name, "")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidInput(f"{name}: not valid JSON ({exc})") from exc

    if action in ("approve", "reject"):
        return {"rationale": form.get("rationale", "")}
    if action == "correct_output":
        return {"output": form.get("output", "")}
    if action == "correct_tool_call":
        calls = parsed("tool_calls")
        return {"tool_calls": calls if isinstance(calls, list) else [calls]}
    if action == "preference":
        responses = _responses(task)
        a = responses[0]["value"] if responses else None
        b = form.get("response_b") or (responses[1]["value"] if len(responses) > 1 else None)
        if a is None or b in (None, ""):
            raise InvalidInput("a preference needs two responses: write the second one")
        return {
            "response_a": a,
            "response_b": b,
            "preferred": form.get("preferred", ""),
            "reason": form.get("reason") or None,
        }
    if action == "adoption":
        return {"adopted": form.get("adopted") == "yes", "rationale": form.get("rationale", "")}
    if action == "knowledge_relevance":
        return {
            "document_id": form.get("document_id", ""),
            "relevant": form.get("relevant") == "yes",
            "note": form.get("note") or None,
        }
    if action == "missing_knowledge":
        return {"text": form.get("text", "")}
    raise InvalidInput(f"unknown action {action!r}")


@router.post("/tasks/{task_id}/review")
async def review_action(request: Request, task_id: str) -> Response:
    key = _user(request)
    form = await _form(request)
    store = request.app.state.store
    action = form.get("action", "")
    task = store.get_task(task_id)
    queue = form.get("queue")  # "" is the queue of every workload
    try:
        payload = _payload(action, form, task)
        outcome = review(
            store,
            request.app.state.ingestor,
            task_id,
            action,
            payload,
            reviewer=f"key:{key.name}",
            nonce=form.get("form_id") or None,
        )
    except InvalidInput as exc:  # the page again, with what is wrong and the reviewer's input kept
        return _task_view(request, task_id, queue=queue, error=exc.message, form=form)
    if outcome.stored:
        request.app.state.metrics.reviews.labels(action).inc()
    if queue is not None and outcome.state is not None:  # done with this item: the next one
        following = next_item(store, queue or None, skip=task_id)
        if following:
            target = f"/ui/tasks/{following['task_id']}?" + urlencode({"queue": queue, "done": action})
            return RedirectResponse(target, status_code=303)
        return RedirectResponse(
            "/ui/review?" + urlencode({"workload": queue, "done": action}), status_code=303
        )
    query = {"done": action, **({"queue": queue} if queue is not None else {})}
    return RedirectResponse(f"/ui/tasks/{task_id}?" + urlencode(query), status_code=303)


@router.get("/review")
def review_queue(request: Request, workload: str = "", done: str | None = None) -> HTMLResponse:
    _user(request)
    store = request.app.state.store
    items = store.review_queue(workload or None, limit=PAGE_SIZE)
    from flywheel.cycle import review_metrics

    metrics = review_metrics(store, workload) if workload else None
    return _html(request, "review.html", items=items, workload=workload, done=done, metrics=metrics)


@router.get("/review/next")
def review_next(request: Request, workload: str = "") -> Response:
    _user(request)
    item = next_item(request.app.state.store, workload or None)
    if item is None:
        return RedirectResponse("/ui/review?" + urlencode({"workload": workload}), status_code=303)
    return RedirectResponse(f"/ui/tasks/{item['task_id']}?" + urlencode({"queue": workload}), status_code=303)


# ------------------------------------------------------------------ dashboard


@router.get("/dashboard")
def dashboard(request: Request, workload: str = "") -> HTMLResponse:
    _user(request)
    store = request.app.state.store
    from flywheel.cycle import list_cycles

    workloads = sorted({c["workload"] for c in list_cycles(store)})
    workload = workload or (workloads[0] if workloads else "")
    empty: dict[str, Any] = {"cycles": [], "stages": [], "candidates": [], "alignment": [], "review": None}
    data = dashboard_data(store, workload) if workload else empty
    return _html(
        request,
        "dashboard.html",
        workload=workload,
        workloads=workloads,
        data=data,
        charts=specs(data) if workload else {},
    )


# ------------------------------------------------------------------ static


@cache
def _vega_bundle() -> bytes:
    import vl_convert

    return vl_convert.javascript_bundle().encode()  # type: ignore[call-arg]


@router.get("/static/{name}")
def static(name: str) -> Response:
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if name == "vega.js":
        return Response(_vega_bundle(), media_type="text/javascript", headers=headers)
    files = {"app.js": "text/javascript", "app.css": "text/css", "dashboard.js": "text/javascript"}
    if name not in files:
        raise HTTPException(404)
    return Response((STATIC / name).read_bytes(), media_type=files[name], headers=headers)


def api_reference(request: Request, document: dict[str, Any]) -> HTMLResponse:
    """``/docs``: the OpenAPI document as a page (public, like the document)."""
    request.state.user = (None, None)
    operations = [
        {"path": path, "method": method.upper(), **operation}
        for path, item in sorted(document.get("paths", {}).items())
        for method, operation in item.items()
    ]
    return _html(request, "api.html", document=document, operations=operations)


def html_error(request: Request, exc: FlywheelError) -> HTMLResponse:
    """An error on a page, as a page."""
    if not hasattr(request.state, "user"):
        request.state.user = (None, None)
    return _html(request, "error.html", status=exc.status, message=exc.message, hint=exc.hint)
