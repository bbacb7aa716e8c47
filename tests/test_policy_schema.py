"""The JSON Schema for editors agrees with the loader and the shipped bundle."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gateway.app import default_policies
from gateway.policy import _bundle

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "policy.schema.json").read_text()
)
POLICY_FILES = sorted(
    p for p in Path(default_policies()).glob("*.yaml") if p.name != "tiers.yaml"
)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value.isoformat() if isinstance(value, date) else value


def test_the_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", POLICY_FILES, ids=[p.name for p in POLICY_FILES])
def test_every_shipped_policy_file_follows_the_schema(path: Path) -> None:
    document = _json_ready(yaml.safe_load(path.read_text()))
    errors = list(Draft202012Validator(SCHEMA).iter_errors(document))
    assert errors == []


@pytest.mark.parametrize(
    ("schema_part", "loader_keys"),
    [
        (SCHEMA["properties"], _bundle.POLICY_KEYS),
        (SCHEMA["$defs"]["rule"]["properties"], _bundle.RULE_KEYS),
        (SCHEMA["$defs"]["cap"]["properties"], _bundle.CAP_KEYS),
    ],
    ids=["policy", "rule", "cap"],
)
def test_the_schema_allows_exactly_the_keys_the_loader_allows(
    schema_part: dict[str, Any], loader_keys: set[str]
) -> None:
    assert set(schema_part) == loader_keys


def test_the_schema_knows_the_loader_modes_and_effects() -> None:
    assert tuple(SCHEMA["$defs"]["mode"]["enum"]) == _bundle.MODES
    assert (
        tuple(SCHEMA["$defs"]["rule"]["properties"]["effect"]["enum"])
        == _bundle.EFFECTS
    )
