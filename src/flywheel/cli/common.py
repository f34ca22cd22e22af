"""Helpers shared by the command modules: settings, store, output."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console

from flywheel.config import Settings
from flywheel.store import Store


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, soft_wrap=False)


def settings() -> Settings:
    return Settings()


def open_store() -> Store:
    return Store.open(settings())


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
