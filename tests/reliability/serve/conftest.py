"""The running Serve app (tiny backbone, domains alpha and beta) of tests/integration_serve, on this suite's
stack (its conftest is loaded by path; the stack fixtures come from the parent folder's conftest)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "reliability_serve_fixtures", Path(__file__).parents[2] / "integration_serve" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_serve_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _serve_fixtures  # its dataclasses look their module up there
_spec.loader.exec_module(_serve_fixtures)
served_app = _serve_fixtures.served_app
ServedApp = _serve_fixtures.ServedApp

SERVED_DOMAINS = ("alpha", "beta")
