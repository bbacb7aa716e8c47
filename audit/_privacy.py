"""The personal-data guard for audit record bodies.

Audit records are kept for years and exported to third parties, so they carry
the contact's pseudonymous id only. `check_no_personal_data` refuses any body in
which a string, key or value, at any depth, contains an e-mail address or an
E.164-looking phone number. It errs towards refusing: a false alarm costs a
renamed field, a leak costs a data breach. Its messages name the path, never
the value found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from audit._canonical import MAX_DEPTH, child_path
from audit.errors import PersonalDataError

_EMAIL = re.compile(r"[^\s@]@[^\s@]+\.[^\s@]")
"""Anything shaped local@domain.tld. Only one character of the local part is
matched, which finds the same strings as a whole-local-part pattern in time
linear in the text (a greedy local part would be quadratic on long text)."""

_PHONE = re.compile(r"\+\d(?:[ \-.()]{0,2}\d){6,14}")
"""A "+" then 7 to 15 digits, perhaps split by spaces, dashes, dots or brackets."""


def check_no_personal_data(value: object, path: str) -> None:
    """Raise `PersonalDataError` if any string within ``value`` looks personal.

    Types that are not JSON are skipped here; canonicalisation refuses them.
    """
    _scan(value, path, 0)


def _scan(value: object, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                _check_string(key, f"a key of {path or 'the top-level object'}")
                _scan(item, child_path(path, key), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _scan(item, f"{path}[{index}]", depth + 1)


def _check_string(text: str, where: str) -> None:
    if _EMAIL.search(text):
        raise PersonalDataError(where, "holds what looks like an e-mail address")
    if _PHONE.search(text):
        raise PersonalDataError(where, "holds what looks like a phone number")
