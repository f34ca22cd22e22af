"""Print the server's OpenAPI document: ``python -m flywheel.server.openapi > docs/openapi.json``."""

from __future__ import annotations

import json
import sys

from flywheel.config import Settings
from flywheel.server.app import create_app

if __name__ == "__main__":
    app = create_app(Settings(database_url="sqlite://", auto_migrate=False))
    json.dump(app.openapi(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
