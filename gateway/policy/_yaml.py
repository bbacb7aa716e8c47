"""Strict YAML reading for policy files: positions kept, duplicates refused.

Every string comes back as `Located`, a `str` that remembers the line and
column where its text starts in the file, so that an error inside a CEL
expression can name the file's line and column, not only the expression's.
A key written twice in one mapping is refused (plain YAML keeps the last one
silently, so a second `condition:` would win without a word).
"""

from __future__ import annotations

from typing import Any

import yaml


class Located(str):
    """A string from a YAML file, with the 1-based position of its text."""

    line: int
    column: int

    def __new__(cls, text: str, line: int, column: int) -> Located:
        value = super().__new__(cls, text)
        value.line = line
        value.column = column
        return value


def position(value: object) -> tuple[int, int]:
    """(line, column) of a value read from YAML; (0, 0) when unknown."""
    if isinstance(value, Located):
        return value.line, value.column
    return 0, 0


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let SafeLoader refuse it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_str(self, node: yaml.ScalarNode) -> Located:
        text = str(self.construct_scalar(node))
        mark = node.start_mark
        if node.style in ("|", ">"):  # block scalar: text starts on the next line
            return Located(text, mark.line + 2, _indent(node, mark.line + 1))
        quoted = 1 if node.style in ("'", '"') else 0
        return Located(text, mark.line + 1, mark.column + 1 + quoted)


def _indent(node: yaml.ScalarNode, line: int) -> int:
    buffer = node.start_mark.buffer or ""
    lines = buffer.split("\n")
    if line >= len(lines):
        return 1
    text = lines[line]
    return len(text) - len(text.lstrip(" ")) + 1


_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)


def load(raw: bytes) -> Any:
    """Parse one YAML document strictly; raises `yaml.YAMLError`."""
    return yaml.load(raw, Loader=_StrictLoader)
