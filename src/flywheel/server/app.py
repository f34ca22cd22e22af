"""The FastAPI application: wiring only; the work is done by the stages."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from flywheel import __version__
from flywheel.config import Settings
from flywheel.errors import ConfigError, FlywheelError, StoreUnavailable
from flywheel.ingest import Ingestor
from flywheel.server import ingest, tasks
from flywheel.server.auth import require
from flywheel.server.guard import RequestGuard, error_response
from flywheel.server.metrics import ServerMetrics, StoreCollector
from flywheel.store import ApiKey, Store
from flywheel.web import pages
from flywheel.web.session import SessionSigner

__all__ = ["check_bind", "create_app"]

log = logging.getLogger(__name__)


def check_bind(host: str, auth: bool) -> None:
    """Refuse to serve without authentication anywhere but on a loopback address."""
    if auth:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"refusing to serve without authentication on {host}",
            hint="create a key with 'flywheel keys create --scope ingest' and drop --no-auth, "
            "or listen on 127.0.0.1",
        )


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The server app (``uvicorn --factory flywheel.server.app:create_app`` works too)."""
    settings = settings or Settings()
    check_bind(settings.host, settings.auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or Store.open(settings)
        app.state.metrics.store_collector = StoreCollector(app.state.store)
        app.state.ingestor = Ingestor(app.state.store, settings, group_commit=True)
        yield
        app.state.ingestor.close()
        if store is None:
            app.state.store.close()

    app = FastAPI(
        title="data-flywheel",
        version=__version__,
        description="Collect agent traces, curate them, improve the agent, measure, repeat.",
        lifespan=lifespan,
        docs_url=None,  # ours below: no third-party script on this origin
        redoc_url=None,
    )
    app.add_middleware(RequestGuard, settings=settings)
    app.state.settings = settings
    app.state.auth = settings.auth
    app.state.metrics = ServerMetrics()
    app.state.signer = SessionSigner(settings)

    @app.exception_handler(FlywheelError)
    async def _flywheel_error(request: Request, exc: FlywheelError) -> Response:
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            {"error": {"type": "InvalidInput", "message": message, "problems": problems}},
            status_code=400,
        )

    @app.get("/healthz", summary="Liveness and database reachability (no key needed)")
    def healthz(request: Request) -> dict[str, str]:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        try:
            with request.app.state.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics(request: Request, key: Annotated[ApiKey, Depends(require("ingest", "review"))]) -> Response:
        state = request.app.state
        state.metrics.pending.set(state.ingestor.writer.pending_rows)
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(ingest.router)
    app.include_router(tasks.router)
    app.include_router(pages.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from flywheel.server.openapi import build_openapi  # also a script: imported late

            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        """The API reference, rendered here from /openapi.json (no key needed, like the
        document itself; no script from elsewhere)."""
        return pages.api_reference(request, app.openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    return app
