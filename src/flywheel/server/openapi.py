"""The server's OpenAPI document, with every status code the routes answer.

Print it with ``python -m flywheel.server.openapi > docs/openapi.json`` (a test
checks that the committed copy is current).

FastAPI documents a 422 "Validation Error" for every route with parameters;
this server answers a malformed request with 400 (``InvalidInput``) and keeps
422 for a batch whose every event was rejected. So each operation's error
answers are written here from what the route takes: a key (401, 403),
parameters (400), a path parameter (404), a body (413, 415), and the
store (503); 403 also answers a request that names a host the server does not
answer to or that comes from another site (``flywheel.server.guard``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from flywheel.server.schemas import (
    AnnotationRequest,
    CorrectionRequest,
    ErrorResponse,
    EventBatch,
    FeedbackRequest,
)

__all__ = ["ERRORS", "build_openapi"]

ERRORS = {
    "400": "malformed request: a parameter or the body is not what the route takes",
    "401": "no API key, or an unknown or revoked one",
    "403": "the key's scope does not allow this, the request names a host this server does not "
    "answer to, or it comes from another site's page",
    "404": "no such record",
    "413": "the body is over the limit (FLYWHEEL_MAX_BODY_BYTES)",
    "415": "the body's Content-Type is not one the route takes",
    "503": "the database cannot be reached; nothing was committed, retry later",
}

#: Routes that need no key (they still answer 503 when the store is down).
PUBLIC = frozenset({"/healthz"})


def _statuses(path: str, operation: dict[str, Any]) -> list[str]:
    """The error answers of an operation, from what it takes."""
    where = {p.get("in") for p in operation.get("parameters", [])}
    has_body = "requestBody" in operation
    statuses = ["503"]
    if path not in PUBLIC:
        statuses += ["401", "403"]
    if where or has_body:
        statuses.append("400")
    if "path" in where:
        statuses.append("404")
    if has_body:
        statuses += ["413", "415"]
    return statuses


def _fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (EventBatch, FeedbackRequest, CorrectionRequest, AnnotationRequest, ErrorResponse):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if _fastapi_validation_error(responses.get("422", {})):
                del responses["422"]  # FastAPI's validation error: ours is a 400
            for status in _statuses(path, operation):
                responses.setdefault(
                    status,
                    {"description": ERRORS[status], "content": {"application/json": {"schema": error}}},
                )
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, when nothing refers to them
        if f"#/components/schemas/{unused}" not in json.dumps(schema):
            components.pop(unused, None)
    return schema


if __name__ == "__main__":
    from flywheel.config import Settings
    from flywheel.server.app import create_app

    app = create_app(Settings(database_url="sqlite://", auto_migrate=False))
    json.dump(app.openapi(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
