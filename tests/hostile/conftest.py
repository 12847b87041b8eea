"""Fixtures of the hostile-input suite: the shared stack fixtures of tests/integration, loaded by path
(conftest files only apply to their own folder)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "hostile_stack_fixtures", Path(__file__).parents[1] / "integration" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_stack_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stack_fixtures)
local_stack = _stack_fixtures.local_stack
stack_endpoints = _stack_fixtures.stack_endpoints
kafka_bootstrap = _stack_fixtures.kafka_bootstrap
unique_name = _stack_fixtures.unique_name
service_settings = _stack_fixtures.service_settings
object_store = _stack_fixtures.object_store
read_topic = _stack_fixtures.read_topic
statistics_inspector = _stack_fixtures.statistics_inspector
