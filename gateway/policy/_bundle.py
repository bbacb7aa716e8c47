"""Loading and validating a policy bundle: a folder of YAML policy files.

Plan of `load_bundle`, each step refusing the whole bundle on its first error:
  1. read every ``*.yaml`` file of the folder, in name order; the bundle hash
     is SHA-256 over each file's name and bytes, so any edit changes it;
  2. parse each file as YAML (a syntax error names file, line and column);
  3. check the policy's shape: known keys only, required keys present, values
     of the expected type, effects among ``deny`` and ``defer``;
  4. compile every CEL expression (a syntax error names file, rule, line and
     column within the expression);
  5. refuse a rule or cap id used twice anywhere in the bundle.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import celpy
import yaml
from celpy.celparser import CELParseError

from gateway.errors import PolicyError
from gateway.policy._functions import HOST_FUNCTIONS

EFFECTS = ("deny", "defer")
POLICY_KEYS = {"id", "description", "citation", "match", "variables", "rules", "caps"}
RULE_KEYS = {"id", "effect", "condition", "message", "citation", "not_before"}
CAP_KEYS = {"id", "max", "window", "purposes", "channels", "message", "citation"}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_MAX = {"s": 366 * 86400, "m": 366 * 1440, "h": 366 * 24, "d": 366}
_ENV = celpy.Environment()


@dataclass(frozen=True)
class Expr:
    """A compiled CEL expression with the source it came from."""

    source: str
    program: celpy.Runner


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    condition: Expr
    message: str
    citation: str
    not_before: Expr | None


@dataclass(frozen=True)
class Cap:
    """At most `max` sends in any rolling `window`, counted across `channels`."""

    id: str
    max: int
    window: timedelta
    purposes: tuple[str, ...]
    channels: tuple[str, ...]
    message: str
    citation: str


@dataclass(frozen=True)
class Policy:
    id: str
    file: str
    description: str
    citation: str
    match: Expr
    variables: tuple[tuple[str, Expr], ...]
    rules: tuple[Rule, ...]
    caps: tuple[Cap, ...]


@dataclass(frozen=True)
class Bundle:
    policies: tuple[Policy, ...]
    hash: str
    source: str

    @property
    def history_window(self) -> timedelta:
        """How far back decisions need the contact's sends (the longest cap)."""
        return max(
            (c.window for p in self.policies for c in p.caps), default=timedelta()
        )


def load_bundle(folder: str | Path) -> Bundle:
    """Load and validate every policy file in `folder`; see the module plan."""
    root = Path(folder)
    files = sorted(root.glob("*.yaml"))
    strays = sorted(p.name for p in root.glob("*.yml"))
    if strays:
        raise PolicyError(
            f"policy bundle {root}: {', '.join(strays)} would be ignored; "
            "policy files must end in .yaml"
        )
    if not files:
        raise PolicyError(f"policy bundle {root}: no *.yaml policy files found")

    digest = hashlib.sha256()
    policies = []
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        policies.append(_load_policy(path.name, raw))

    _refuse_duplicate_ids(policies)
    return Bundle(tuple(policies), digest.hexdigest(), str(root))


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping (plain
    YAML keeps the last one silently, so a second `condition:` would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_policy(name: str, raw: bytes) -> Policy:
    try:
        doc = yaml.load(raw, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" line {where.line + 1}, column {where.column + 1}" if where else ""
        raise PolicyError(f"{name}:{at} is not valid YAML: {exc}") from exc
    return _Reader(name).policy(doc)


class _Reader:
    """Turns one parsed YAML document into a `Policy`, naming what is wrong."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, where: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.file}: {where}: {problem}")

    def policy(self, doc: Any) -> Policy:
        if not isinstance(doc, dict):
            raise self.fail("top level", f"expected a mapping, found {_kind(doc)}")
        self.keys(
            doc, POLICY_KEYS, {"id", "description", "citation", "match"}, "policy"
        )
        pid = self.text(doc, "id", "policy")
        variables = self.variables(doc.get("variables") or {}, pid)
        rules = tuple(
            self.rule(r, pid, i) for i, r in enumerate(self.seq(doc, "rules", pid))
        )
        caps = tuple(
            self.cap(c, pid, i) for i, c in enumerate(self.seq(doc, "caps", pid))
        )
        if not rules and not caps:
            raise self.fail(f"policy {pid!r}", "has neither rules nor caps")
        return Policy(
            id=pid,
            file=self.file,
            description=self.text(doc, "description", pid),
            citation=self.text(doc, "citation", pid),
            match=self.expr(doc, "match", f"policy {pid!r}"),
            variables=variables,
            rules=rules,
            caps=caps,
        )

    def rule(self, doc: Any, pid: str, index: int) -> Rule:
        where = f"policy {pid!r} rule #{index + 1}"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        self.keys(doc, RULE_KEYS, {"id", "effect", "condition", "message"}, where)
        rid = self.text(doc, "id", where)
        where = f"rule {rid!r}"
        effect = self.text(doc, "effect", where)
        if effect not in EFFECTS:
            raise self.fail(
                where, f"effect must be one of {', '.join(EFFECTS)}, found {effect!r}"
            )
        not_before = (
            self.expr(doc, "not_before", where) if "not_before" in doc else None
        )
        if not_before is not None and effect != "defer":
            raise self.fail(where, "not_before is only meaningful for effect 'defer'")
        return Rule(
            id=rid,
            effect=effect,
            condition=self.expr(doc, "condition", where),
            message=self.text(doc, "message", where),
            citation=str(doc.get("citation", "")),
            not_before=not_before,
        )

    def cap(self, doc: Any, pid: str, index: int) -> Cap:
        where = f"policy {pid!r} cap #{index + 1}"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        self.keys(doc, CAP_KEYS, {"id", "max", "window", "message"}, where)
        cid = self.text(doc, "id", where)
        where = f"cap {cid!r}"
        limit = doc["max"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise self.fail(
                where,
                f"max must be a whole number of at least 1, found {limit!r} "
                "(a cap of 0 would block every message; remove the cap instead)",
            )
        return Cap(
            id=cid,
            max=limit,
            window=self.duration(doc["window"], where),
            purposes=self.names(doc, "purposes", where),
            channels=self.names(doc, "channels", where),
            message=self.text(doc, "message", where),
            citation=str(doc.get("citation", "")),
        )

    def variables(self, doc: Any, pid: str) -> tuple[tuple[str, Expr], ...]:
        where = f"policy {pid!r} variables"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        out = []
        for name in doc:
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(where, f"{name!r} is not a valid variable name")
            if name in RESERVED_NAMES:
                raise self.fail(where, f"{name!r} would hide the context name {name!r}")
            out.append((name, self.expr(doc, name, f"{where} {name!r}")))
        return tuple(out)

    def keys(
        self, doc: dict[str, Any], allowed: set[str], required: set[str], where: str
    ) -> None:
        unknown = sorted(str(key) for key in set(doc) - allowed)
        if unknown:
            raise self.fail(
                where,
                f"unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}",
            )
        missing = sorted(required - set(doc))
        if missing:
            raise self.fail(where, f"missing required key(s) {', '.join(missing)}")

    def text(self, doc: Mapping[str, Any], key: str, where: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"{key} must be a non-empty string, found {value!r}")
        return value.strip()

    def seq(self, doc: Mapping[str, Any], key: str, pid: str) -> Sequence[Any]:
        value = doc.get(key) or []
        if not isinstance(value, list):
            raise self.fail(
                f"policy {pid!r}", f"{key} must be a list, found {_kind(value)}"
            )
        return value

    def names(self, doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = doc.get(key) or []
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise self.fail(where, f"{key} must be a list of names, found {value!r}")
        return tuple(value)

    def duration(self, value: Any, where: str) -> timedelta:
        match = _DURATION.match(str(value))
        if match is None or not 0 < int(match.group(1)) <= _MAX[match.group(2)]:
            raise self.fail(
                where,
                "window must look like 90m, 24h or 7d (at most 366 days), "
                f"found {value!r}",
            )
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

    def expr(self, doc: Mapping[str, Any], key: str, where: str) -> Expr:
        source = doc.get(key)
        if not isinstance(source, str) or not source.strip():
            raise self.fail(where, f"{key} must be a CEL expression, found {source!r}")
        try:
            ast = _ENV.compile(source)
        except CELParseError as exc:
            line, column = getattr(exc, "line", "?"), getattr(exc, "column", "?")
            raise self.fail(
                where,
                f"{key} is not valid CEL (expression line {line}, column {column}): "
                f"{source.strip()!r}",
            ) from exc
        return Expr(
            source.strip(), _ENV.program(ast, functions=cast(Any, HOST_FUNCTIONS))
        )


RESERVED_NAMES = frozenset({"contact", "message", "client", "now"})


def _refuse_duplicate_ids(policies: Sequence[Policy]) -> None:
    seen: dict[str, str] = {}
    for policy in policies:
        ids = [policy.id] + [r.id for r in policy.rules] + [c.id for c in policy.caps]
        for item in ids:
            if item in seen:
                raise PolicyError(
                    f"{policy.file}: id {item!r} is already used in {seen[item]}"
                )
            seen[item] = policy.file


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
