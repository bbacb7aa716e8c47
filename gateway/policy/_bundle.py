"""Loading and validating a policy bundle: a folder of YAML files.

A bundle folder holds policy files (``*.yaml``), data files
(``data/*.yaml``: jurisdictions, windows, holidays, each entry with its
citation) and the bundle's own tests (``tests/*.yaml``, run by
`gateway.policy.run_tests`, not part of the bundle's hash).

Plan of `load_bundle`; the bundle is refused whole on the first error, and
every error names the file, the line and column where known, the rule and the
reason:
  1. list the files; a ``.yml`` file is refused rather than silently ignored;
  2. hash them: SHA-256 over each file's relative name and bytes, so any edit
     to a policy or data file changes the bundle hash;
  3. parse each file as strict YAML (no key written twice);
  4. read the data files, each entry with a citation;
  5. read each policy's shape: known keys, required keys, types, effects,
     modes, dates, cap limits;
  6. compile every CEL expression with the chosen runtime, then type-check it
     against the declared context (`gateway.policy._context`): unknown names,
     unknown fields, unknown functions, a condition that is not a boolean,
     expressions over the size or depth limits;
  7. refuse a policy, rule or cap id used twice anywhere in the bundle.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import PolicyError
from gateway.policy import _context, _typecheck
from gateway.policy._functions import HOST_FUNCTIONS
from gateway.policy._runtime import CELParseError, CelRuntime, Program, runtime
from gateway.policy._tiers import MAX_CAP, TIERS_FILE, Tier, read_tiers
from gateway.policy._yaml import Located, position
from gateway.policy._yaml import load as load_yaml

EFFECTS = ("deny", "defer")
MODES = ("enforce", "warn", "shadow")
POLICY_KEYS = {
    "id", "description", "citation", "match", "variables", "rules", "caps",
    "mode", "effective_from", "effective_until",
}  # fmt: skip
RULE_KEYS = {
    "id", "effect", "condition", "message", "message_expr", "citation",
    "not_before", "mode",
}  # fmt: skip
CAP_KEYS = {
    "id",
    "max",
    "tier_cap",
    "window",
    "purposes",
    "channels",
    "message",
    "citation",
    "mode",
}
DATA_KEYS = {"description", "entries"}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_MAX = {"s": 366 * 86400, "m": 366 * 1440, "h": 366 * 24, "d": 366}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_CHANNEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class Expr:
    """A compiled CEL expression with the source and place it came from."""

    source: str
    program: Program
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    mode: str
    condition: Expr
    message: str
    message_expr: Expr | None
    citation: str
    not_before: Expr | None


@dataclass(frozen=True)
class Cap:
    """At most `max` sends in any rolling `window`, counted across `channels`.

    A cap with `tier_cap` takes its maximum from the contact's tier
    (tiers.yaml, caps) and does not apply to a contact whose tier has no
    such cap; its `max` is 0.
    """

    id: str
    mode: str
    max: int
    window: timedelta
    purposes: tuple[str, ...]
    channels: tuple[str, ...]
    message: str
    citation: str
    tier_cap: str = ""


@dataclass(frozen=True)
class Policy:
    id: str
    file: str
    description: str
    citation: str
    mode: str
    effective_from: date | None
    effective_until: date | None
    match: Expr
    variables: tuple[tuple[str, Expr], ...]
    rules: tuple[Rule, ...]
    caps: tuple[Cap, ...]

    def in_effect(self, day: date) -> bool:
        """True when `day` (UTC) falls within the policy's effective dates."""
        if self.effective_from is not None and day < self.effective_from:
            return False
        return self.effective_until is None or day <= self.effective_until


@dataclass(frozen=True)
class Bundle:
    policies: tuple[Policy, ...]
    hash: str
    source: str
    runtime: str = "interpreted"
    data: Mapping[str, Any] = field(default_factory=dict)
    tiers: tuple[Tier, ...] = ()

    @property
    def history_window(self) -> timedelta:
        """How far back decisions need the contact's sends (the longest cap)."""
        windows = [c.window for p in self.policies for c in p.caps]
        return max([*windows, _context.SENDS_HORIZON])

    def rule_ids(self) -> list[str]:
        """Every rule and cap id, in bundle order."""
        return [i for p in self.policies for i in (*_ids(p.rules), *_ids(p.caps))]


def _ids(items: Sequence[Rule] | Sequence[Cap]) -> list[str]:
    return [item.id for item in items]


def load_bundle(folder: str | Path, runtime_name: str = "interpreted") -> Bundle:
    """Load and validate the bundle in `folder`; see the module plan."""
    root = Path(folder)
    if not root.is_dir():
        raise PolicyError(f"policy bundle {root}: not a folder")

    policy_files, data_files = _list_files(root)

    digest = hashlib.sha256()
    raw: dict[Path, bytes] = {}
    for path in (*policy_files, *data_files):
        raw[path] = _read(root, path)
        name = path.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0" + raw[path] + b"\0")

    data = {
        p.stem: _read_data(p.name, _parse(f"data/{p.name}", raw[p])) for p in data_files
    }

    cel = runtime(runtime_name)
    tiers: tuple[Tier, ...] = ()
    if TIERS_FILE in {p.name for p in policy_files}:
        path = root / TIERS_FILE
        tiers = read_tiers(
            _Reader(TIERS_FILE, cel, data), _parse(TIERS_FILE, raw[path])
        )
    policies = tuple(
        _Reader(p.name, cel, data).policy(_parse(p.name, raw[p]))
        for p in policy_files
        if p.name != TIERS_FILE
    )

    _refuse_duplicate_ids(policies)
    _match_tier_caps(policies, tiers)
    return Bundle(policies, digest.hexdigest(), str(root), cel.name, data, tiers)


def _match_tier_caps(policies: Sequence[Policy], tiers: Sequence[Tier]) -> None:
    """Every tier cap is read by a policy cap in enforce mode, and every
    policy cap that reads a tier cap reads one that some tier defines."""
    readers = [(p, c) for p in policies for c in p.caps if c.tier_cap]
    defined = {name for t in tiers for name in t.caps}
    for policy, cap in readers:
        if cap.tier_cap not in defined:
            raise PolicyError(
                f"{policy.file}: cap {cap.id!r}: tier_cap {cap.tier_cap!r} is "
                f"defined by no tier in {TIERS_FILE}"
            )
    enforced = {c.tier_cap for _, c in readers if c.mode == "enforce"}
    for tier in tiers:
        for name in sorted(set(tier.caps) - enforced):
            raise PolicyError(
                f"{TIERS_FILE}: tier {tier.id!r} cap {name!r} is enforced by no "
                f"policy (add a cap with tier_cap: {name}, in enforce mode)"
            )


def _list_files(root: Path) -> tuple[list[Path], list[Path]]:
    strays = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if (p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yaml")
        or ".yaml." in p.name
    )
    if strays:
        raise PolicyError(
            f"policy bundle {root}: {', '.join(strays)} would be ignored; "
            "policy files must end in .yaml (lower case; no backup copies here)"
        )
    policy_files = sorted(root.glob("*.yaml"))
    if not policy_files:
        raise PolicyError(f"policy bundle {root}: no *.yaml policy files found")
    return policy_files, sorted((root / "data").glob("*.yaml"))


def _read(root: Path, path: Path) -> bytes:
    name = path.relative_to(root).as_posix()
    if not path.is_file():
        raise PolicyError(f"{name}: not a regular file (a folder or a broken link?)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{name}: cannot be read: {exc.strerror}") from exc


def _parse(name: str, raw: bytes) -> Any:
    try:
        return load_yaml(raw)
    except (TypeError, ValueError) as exc:  # e.g. a list used as a mapping key
        raise PolicyError(f"{name}: not a valid policy file: {exc}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"{where.line + 1}:{where.column + 1}:" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{name}:{at} not valid YAML: {problem}") from exc


def _read_data(name: str, doc: Any) -> Any:
    """A data file: a description and entries, each entry with a citation."""
    where = f"data/{name}"
    if not isinstance(doc, dict) or set(doc) - DATA_KEYS or "entries" not in doc:
        raise PolicyError(
            f"{where}: a data file is a mapping with 'description' and 'entries'"
        )
    entries = doc["entries"]
    items = entries.items() if isinstance(entries, dict) else enumerate(entries or [])
    for key, entry in items:
        if not isinstance(entry, dict) or not str(entry.get("citation", "")).strip():
            line, _ = position(key) if isinstance(key, str) else (0, 0)
            at = f":{line}" if line else ""
            raise PolicyError(
                f"{where}{at}: entry {key!r} has no citation; every entry of a "
                "data file names the law or source it comes from"
            )
    return _plain(entries)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


class _Reader:
    """Turns one parsed policy file into a `Policy`, naming what is wrong."""

    def __init__(self, file: str, cel: CelRuntime, data: Mapping[str, Any]) -> None:
        self.file = file
        self.cel = cel
        self.types = dict(_context.variable_types(data))

    def fail(self, where: str, problem: str, at: object = None) -> PolicyError:
        line, column = position(at)
        place = f"{self.file}:{line}:{column}" if line else self.file
        return PolicyError(f"{place}: {where}: {problem}")

    def policy(self, doc: Any) -> Policy:
        if not isinstance(doc, dict):
            raise self.fail("top level", f"expected a mapping, found {_kind(doc)}")
        self.keys(
            doc, POLICY_KEYS, {"id", "description", "citation", "match"}, "policy"
        )
        pid = self.ident(doc, "policy")
        where = f"policy {pid!r}"
        mode = self.mode(doc, "enforce", where)
        match = self.expr(doc, "match", where, _typecheck.BOOL)
        variables = self.variables(doc.get("variables") or {}, pid)
        rules = tuple(
            self.rule(r, pid, i, mode)
            for i, r in enumerate(self.seq(doc, "rules", pid))
        )
        caps = tuple(
            self.cap(c, pid, i, mode) for i, c in enumerate(self.seq(doc, "caps", pid))
        )
        if not rules and not caps:
            raise self.fail(where, "has neither rules nor caps", doc.get("id"))
        start, until = self.day(doc, "effective_from"), self.day(doc, "effective_until")
        if start and until and until < start:
            raise self.fail(where, "effective_until is before effective_from")
        return Policy(
            id=pid,
            file=self.file,
            description=self.text(doc, "description", where),
            citation=self.text(doc, "citation", where),
            mode=mode,
            effective_from=start,
            effective_until=until,
            match=match,
            variables=variables,
            rules=rules,
            caps=caps,
        )

    def rule(self, doc: Any, pid: str, index: int, default_mode: str) -> Rule:
        where = f"policy {pid!r} rule #{index + 1}"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        self.keys(doc, RULE_KEYS, {"id", "effect", "condition"}, where)
        rid = self.ident(doc, where)
        where = f"rule {rid!r}"
        effect = self.choice(doc, "effect", EFFECTS, where)
        if ("message" in doc) == ("message_expr" in doc):
            raise self.fail(where, "give exactly one of message and message_expr")
        if "not_before" in doc and effect != "defer":
            raise self.fail(where, "not_before is only meaningful for effect 'defer'")
        return Rule(
            id=rid,
            effect=effect,
            mode=self.mode(doc, default_mode, where),
            condition=self.expr(doc, "condition", where, _typecheck.BOOL),
            message=self.text(doc, "message", where) if "message" in doc else "",
            message_expr=self.optional_expr(
                doc, "message_expr", where, _typecheck.STRING
            ),
            citation=str(doc.get("citation") or "").strip(),
            not_before=self.optional_expr(
                doc, "not_before", where, _typecheck.TIMESTAMP
            ),
        )

    def cap(self, doc: Any, pid: str, index: int, default_mode: str) -> Cap:
        where = f"policy {pid!r} cap #{index + 1}"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        self.keys(doc, CAP_KEYS, {"id", "window", "message"}, where)
        cid = self.ident(doc, where)
        where = f"cap {cid!r}"
        limit, tier_cap = self.cap_limit(doc, where)
        purposes = self.names(doc, "purposes", where)
        unknown = sorted(set(purposes) - set(_context.PURPOSES))
        if unknown:
            raise self.fail(
                where,
                f"unknown purpose(s) {', '.join(unknown)}; "
                f"known: {', '.join(_context.PURPOSES)}",
                doc.get("purposes"),
            )
        channels = self.names(doc, "channels", where)
        if any(not _CHANNEL.match(c) for c in channels):
            raise self.fail(
                where,
                f"channel names are lower case letters, digits, '_' or '-', "
                f"found {list(channels)!r}",
            )
        return Cap(
            id=cid,
            mode=self.mode(doc, default_mode, where),
            max=limit,
            window=self.duration(doc["window"], where),
            purposes=purposes,
            channels=channels,
            message=self.text(doc, "message", where),
            citation=str(doc.get("citation") or "").strip(),
            tier_cap=tier_cap,
        )

    def cap_limit(self, doc: Mapping[str, Any], where: str) -> tuple[int, str]:
        """A cap's fixed `max`, or the name of the tier cap it reads."""
        if ("max" in doc) == ("tier_cap" in doc):
            raise self.fail(
                where,
                "give either max (a fixed number) or tier_cap (the name of a "
                "cap in tiers.yaml), not both and not neither",
                doc.get("id"),
            )
        if "tier_cap" in doc:
            name = doc["tier_cap"]
            if not isinstance(name, str) or not _ID.match(name):
                raise self.fail(
                    where,
                    f"tier_cap must name a cap of tiers.yaml, found {name!r}",
                    name,
                )
            return 0, name
        limit = doc["max"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise self.fail(
                where,
                f"max must be a whole number of at least 1, found {limit!r} "
                "(a cap of 0 would block every message; remove the cap instead)",
                doc.get("id"),
            )
        if limit > MAX_CAP:
            raise self.fail(
                where, f"max must be at most {MAX_CAP}, found {limit}", doc.get("id")
            )
        return limit, ""

    def variables(self, doc: Any, pid: str) -> tuple[tuple[str, Expr], ...]:
        where = f"policy {pid!r} variables"
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a mapping, found {_kind(doc)}")
        out = []
        for name in doc:
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(where, f"{name!r} is not a valid variable name", name)
            if name in self.types:
                raise self.fail(
                    where, f"{name!r} would hide the context name {name!r}", name
                )
            expr, kind = self.typed_expr(doc, name, f"{where} {name!r}", None)
            self.types[name] = kind
            out.append((name, expr))
        return tuple(out)

    # -- fields ---------------------------------------------------------------

    def keys(
        self, doc: dict[Any, Any], allowed: set[str], required: set[str], where: str
    ) -> None:
        unknown = sorted(str(key) for key in set(doc) - allowed)
        if unknown:
            first = next(k for k in doc if str(k) == unknown[0])
            raise self.fail(
                where,
                f"unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}",
                first,
            )
        missing = sorted(required - set(doc))
        if missing:
            raise self.fail(where, f"missing required key(s) {', '.join(missing)}")

    def ident(self, doc: Mapping[str, Any], where: str) -> str:
        value = doc.get("id")
        if not isinstance(value, str) or not _ID.match(value):
            raise self.fail(
                where,
                "id must be lower-case letters, digits, '.', '_' or '-', "
                f"found {value!r}",
                value,
            )
        return str(value)

    def text(self, doc: Mapping[str, Any], key: str, where: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"{key} must be a non-empty string, found {value!r}")
        return " ".join(value.split())

    def choice(
        self, doc: Mapping[str, Any], key: str, allowed: Sequence[str], where: str
    ) -> str:
        value = doc.get(key)
        if value not in allowed:
            raise self.fail(
                where,
                f"{key} must be one of {', '.join(allowed)}, found {value!r}",
                value,
            )
        return str(value)

    def mode(self, doc: Mapping[str, Any], default: str, where: str) -> str:
        return self.choice(doc, "mode", MODES, where) if "mode" in doc else default

    def day(self, doc: Mapping[str, Any], key: str) -> date | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, date):
            raise self.fail(
                f"policy {doc.get('id')!r}",
                f"{key} must be a date like 2026-01-31, found {value!r}",
                value,
            )
        return value

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
        return tuple(str(v) for v in value)

    def duration(self, value: Any, where: str) -> timedelta:
        match = _DURATION.match(str(value))
        if match is None or not 0 < int(match.group(1)) <= _MAX[match.group(2)]:
            raise self.fail(
                where,
                "window must look like 90m, 24h or 7d (at most 366 days), "
                f"found {value!r}",
                value,
            )
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

    # -- expressions -----------------------------------------------------------

    def optional_expr(
        self, doc: Mapping[str, Any], key: str, where: str, expected: _typecheck.CelType
    ) -> Expr | None:
        return self.expr(doc, key, where, expected) if key in doc else None

    def expr(
        self, doc: Mapping[str, Any], key: str, where: str, expected: _typecheck.CelType
    ) -> Expr:
        return self.typed_expr(doc, key, where, expected)[0]

    def typed_expr(
        self,
        doc: Mapping[str, Any],
        key: str,
        where: str,
        expected: _typecheck.CelType | None,
    ) -> tuple[Expr, _typecheck.CelType]:
        source = doc.get(key)
        if not isinstance(source, str) or not source.strip():
            raise self.fail(where, f"{key} must be a CEL expression, found {source!r}")
        try:
            program = self.cel.compile(source, HOST_FUNCTIONS)
        except CELParseError as exc:
            line, column = getattr(exc, "line", 1), getattr(exc, "column", 1)
            raise self.fail(
                where,
                f"{key} is not valid CEL: {_first_line(exc)}",
                _shift(source, line, column),
            ) from exc
        kind, problems = _typecheck.check(
            source, _context.type_env(self.types), expected
        )
        if problems:
            first = problems[0]
            raise self.fail(
                where,
                f"{key}: {first.message}",
                _shift(source, first.line, first.column),
            )
        line, _ = position(source)
        return Expr(" ".join(source.split()), program, self.file, line), kind


def _shift(source: str, line: int, column: int) -> object:
    """The file position of (line, column) inside a located expression."""
    base_line, base_column = position(source)
    if not base_line:
        return None
    if line <= 1:
        return Located("", base_line, base_column + max(column, 1) - 1)
    return Located("", base_line + line - 1, max(column, 1))


def _first_line(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _refuse_duplicate_ids(policies: Sequence[Policy]) -> None:
    seen: dict[str, str] = {}
    for policy in policies:
        ids = [policy.id, *(r.id for r in policy.rules), *(c.id for c in policy.caps)]
        for item in ids:
            if item in seen:
                raise PolicyError(
                    f"{policy.file}: id {item!r} is already used in {seen[item]}"
                )
            seen[item] = policy.file


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return "text" if isinstance(value, str) else type(value).__name__
