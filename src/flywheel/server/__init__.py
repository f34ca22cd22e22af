"""The HTTP server: FastAPI routers over the stages, and no business logic.

``create_app(settings)`` builds the app; ``flywheel serve`` runs it with uvicorn.
"""

from flywheel.server.app import check_bind, create_app

__all__ = ["check_bind", "create_app"]
