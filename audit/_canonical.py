"""Canonical JSON: the exact bytes every audit hash is computed over.

Invariants:

- equal values give equal bytes, whatever the key order or container type
  (mapping or dict, list or tuple) they were built with (field case AU-01);
- object keys are sorted by code point at every depth, the separators are ","
  and ":" with no whitespace, and non-ASCII text is UTF-8, not ``\\u`` escapes;
- only values that every JSON implementation reads back identically are
  accepted: objects with string keys, arrays, strings, booleans, null, and
  integers within +/-(2**53 - 1). Floats are refused (field case AU-03: Python
  writes 1.0 where JavaScript writes 1, so a verifier in another language would
  hash other bytes). Every refusal names the path of the offending value.

For this subset the output is the RFC 8785 (JCS) form, except that JCS orders
keys by UTF-16 code unit, which differs for keys holding characters above
U+FFFF.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TypeAlias

from audit.errors import CanonicalizationError

JsonValue: TypeAlias = (
    "bool | int | str | list[JsonValue] | dict[str, JsonValue] | None"
)

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer an IEEE 754 double (a JavaScript number) holds exactly."""

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a value."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


def canonical_json(value: object) -> bytes:
    """Return the canonical UTF-8 JSON bytes of ``value``.

    Raises `CanonicalizationError`, naming the path, for a float, NaN, a
    non-string key, an integer beyond +/-(2**53 - 1) or any non-JSON type.
    """
    return canonical_json_at(value, "")


def canonical_json_at(value: object, path: str) -> bytes:
    """Like `canonical_json`, naming offending values below ``path``."""
    plain = _normalise(value, path, 0)
    text = json.dumps(
        plain,
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return text.encode("utf-8")


def child_path(path: str, key: str) -> str:
    """Return the path of member ``key`` of the object at ``path``."""
    if not _IDENTIFIER.fullmatch(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def _normalise(value: object, path: str, depth: int) -> JsonValue:
    """Check ``value`` and return it as plain dicts, lists and exact scalars."""
    if depth > MAX_DEPTH:
        raise CanonicalizationError(path, f"is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _integer(value, path)
    if isinstance(value, str):
        return _string(value, path)
    if isinstance(value, Mapping):
        return _object(value, path, depth)
    if isinstance(value, list | tuple):
        return [
            _normalise(item, f"{path}[{index}]", depth + 1)
            for index, item in enumerate(value)
        ]
    if isinstance(value, float):
        raise CanonicalizationError(
            path,
            f"is the floating-point number {value!r}; audit records accept "
            "integers and strings only (use minor units such as cents, or a "
            "decimal string)",
        )
    raise CanonicalizationError(path, f"has type {type(value).__name__}, not JSON")


def _integer(value: int, path: str) -> int:
    if abs(value) > MAX_SAFE_INTEGER:
        raise CanonicalizationError(
            path,
            "is an integer beyond +/-(2**53 - 1), which other JSON readers "
            "cannot hold exactly; write it as a string",
        )
    return int(value)


def _string(value: str, path: str) -> str:
    if _SURROGATE.search(value):
        raise CanonicalizationError(
            path, "contains an unpaired UTF-16 surrogate, which UTF-8 cannot encode"
        )
    return str.__str__(value)


def _object(value: Mapping[object, object], path: str, depth: int) -> JsonValue:
    plain: dict[str, JsonValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise CanonicalizationError(
                path,
                f"has a key of type {type(key).__name__}; object keys must be strings",
            )
        key = _string(key, f"a key of {path or 'the top-level object'}")
        child = child_path(path, key)
        plain[key] = _normalise(item, child, depth + 1)
    return plain
