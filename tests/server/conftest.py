from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from flywheel.server import create_app


@pytest.fixture
def keys(store) -> dict[str, str]:
    return {scope: store.create_key(f"{scope}-key", [scope])[0] for scope in ("ingest", "review", "admin")}


@pytest.fixture
def client(settings, store) -> Iterator[TestClient]:
    # A browser on this machine names the server by localhost (TestClient's default
    # "testserver" is not a host the server answers to: flywheel.server.guard).
    with TestClient(create_app(settings, store=store), base_url="http://localhost") as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
