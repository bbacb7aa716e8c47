"""Normalising and hashing contact identifiers for ad-platform audiences.

Ad platforms match audience members on SHA-256 digests of normalised e-mail
addresses and phone numbers, and each platform normalises a little
differently; a value normalised the wrong way hashes to a digest nobody
matches. Invariants:

- A value that already is a SHA-256 hex digest (64 hex characters) is passed
  through, lower-cased, and never normalised or hashed again (field cases AH-05
  u3/u4 and AH-07: double hashing). This check runs before any normalisation.
- A value that cannot be normalised becomes ``""``: the identifier is left out,
  the member is still sent (field case AH-05 u1: one placeholder phone number
  must not fail the batch).
- Nothing here logs; every value handled is personal data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import phonenumbers

__all__ = [
    "google_phone",
    "hashed",
    "is_sha256_hex",
    "meta_phone",
    "normalise_email",
    "normalise_name",
    "sha256_hex",
]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NOT_DIGIT = re.compile(r"\D")
_WHITESPACE = re.compile(r"\s+")
# Google's Data Manager API removes dots and "+tag" only for these domains
# (https://developers.google.com/data-manager/api/devguides/concepts/formatting).
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# The dialling prefix that stands for "+" in most of the world (ITU-T E.164
# numbers written as 00 <country code> ...).
_INTERNATIONAL_PREFIX = "00"


def is_sha256_hex(value: str) -> bool:
    """Whether `value` (trimmed) already is a SHA-256 digest in hex."""
    return _SHA256_HEX.fullmatch(value.strip()) is not None


def sha256_hex(value: str) -> str:
    """The lower-case hex SHA-256 digest of `value` encoded as UTF-8."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hashed(value: str | None, normalise: Callable[[str], str]) -> str:
    """The digest a platform expects for `value`, or ``""`` when there is none.

    An existing digest passes through lower-cased; anything else is normalised
    with `normalise` and hashed, unless normalising leaves nothing.
    """
    if value is None or not value.strip():
        return ""
    if is_sha256_hex(value):
        return value.strip().lower()
    normalised = normalise(value)
    return sha256_hex(normalised) if normalised else ""


def normalise_email(value: str, gmail_rules: bool) -> str:
    """An e-mail address trimmed and lower-cased; ``""`` if it has no domain.

    With `gmail_rules` (Google), addresses at gmail.com or googlemail.com also
    lose every dot and any ``+tag`` in the local part, and whitespace anywhere
    is removed, as the Data Manager API's formatting guide asks (field case
    AH-01). Meta asks only for trimming and lower case.
    """
    address = value.strip().lower()
    if gmail_rules:
        address = _WHITESPACE.sub("", address)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return ""
    if gmail_rules and domain in _GMAIL_DOMAINS:
        local = local.partition("+")[0].replace(".", "")
        if not local:
            return ""
    return f"{local}@{domain}"


def normalise_name(value: str) -> str:
    """A name trimmed and lower-cased, inner spaces kept (field case AH-03)."""
    return value.strip().lower()


def meta_phone(value: str) -> str:
    """A phone number as Meta hashes it: country code and number, digits only.

    Meta asks to remove symbols, letters and leading zeros and to include the
    country code, without "+". The number must be written internationally
    (``+`` or ``00`` before the country code): a national number would be
    given someone else's country code (field cases PH-01, PH-03), so it
    normalises to ``""``. So does a number phonenumbers cannot read as
    possible, e.g. the placeholder ``+0000000000`` (AH-05 u1).
    """
    e164 = google_phone(value)
    return e164[1:] if e164 else ""


def google_phone(value: str) -> str:
    """A phone number in E.164 with its plus sign, or ``""`` (field case AH-01).

    Google's Data Manager API wants ``+``, the country code and digits only
    (https://developers.google.com/data-manager/api/devguides/concepts/formatting).
    Accepted input: ``+`` or ``00`` followed by the country code, with any
    punctuation; extra leading zeros after the prefix are dropped, so
    ``+001-800-555-1234`` and ``0044 207 123 4567`` read as +1 and +44
    (field case AH-05 u2/u5).
    """
    text = value.strip()
    if text.startswith("+"):
        digits = _NOT_DIGIT.sub("", text[1:])
    elif text.startswith(_INTERNATIONAL_PREFIX):
        digits = _NOT_DIGIT.sub("", text)
    else:
        return ""  # no country code: never guess one
    digits = digits.lstrip("0")
    if not digits:
        return ""
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
