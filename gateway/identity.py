"""Normalising the identifiers a campaign tool hands us.

Phone numbers become E.164 (validated with phonenumbers), e-mail addresses are
trimmed and lower-cased. A malformed identifier raises `InvalidRequestError`
naming the field; the value itself is never echoed (it is personal data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from gateway.errors import InvalidRequestError

DEFAULT_REGION = "US"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What personal data looks like inside free text. Each pattern runs in time
# linear in the text. They err towards refusing: a false alarm costs the caller
# a renamed campaign, a leak puts a phone number in a log kept for years.
_PERSONAL = re.compile(
    r"[^@\s]@[^@\s]+\.[^@\s]"  # an e-mail address
    r"|\+\d(?:[\s().-]{0,2}\d){6,14}"  # an international number: +1 212 ...
    r"|(?<![0-9A-Za-z])\(?\d{3}\)?[\s.-]{0,2}\d{3}[\s.-]?\d{4}(?![0-9A-Za-z])"
    r"|(?<![0-9A-Za-z])\d{10,}(?![0-9A-Za-z])"  # a bare run of ten or more digits
)
# Digits inside a longer token of letters and digits (a hash, an id such as
# ct_5f0e1234567890ab) are not read as a phone number.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 200
MAX_ATTRIBUTES_JSON = 16_384


def looks_personal(text: str) -> bool:
    """True when `text` holds what looks like a phone number or an e-mail."""
    return _PERSONAL.search(text) is not None


def check_text(value: str, field: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    """Refuse free text that is missing, too long, has control characters or
    looks like personal data; the value is never echoed."""
    if required and not value:
        raise InvalidRequestError(field, f"is required, 1 to {limit} characters")
    if len(value) > limit:
        raise InvalidRequestError(field, f"is longer than {limit} characters")
    if _CONTROL.search(value):
        raise InvalidRequestError(field, "holds control characters")
    if looks_personal(value):
        raise InvalidRequestError(
            field,
            "looks like it holds a phone number or e-mail address; personal data "
            "belongs in the contact's phone or email field only",
        )
    return value


def normalise_phone(raw: str, field: str = "phone") -> tuple[str, bool]:
    """Return (E.164 number, can receive SMS) or raise naming `field`.

    A number without a leading ``+`` is read as a US number; one that is not
    valid there is refused rather than guessed (see field case PH-03).
    """
    try:
        number = phonenumbers.parse(raw.strip(), DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidRequestError(field, "is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidRequestError(
            field, "is not a valid phone number (write it in E.164, e.g. +1...)"
        )
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    sms = phonenumbers.number_type(number) != PhoneNumberType.FIXED_LINE
    return e164, sms


def normalise_email(raw: str, field: str = "email") -> str:
    """Trim and lower-case an e-mail address, or raise naming `field`."""
    email = raw.strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidRequestError(field, "is not an e-mail address")
    return email


def refuse_personal_data(value: Any, field: str) -> None:
    """Refuse attribute keys or values, at any depth, that look like personal
    data or carry control characters or over-long text.

    Attributes are visible to policies and recorded in the audit log, which
    must hold no personal data; addresses belong in the phone/email fields.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_text(str(key), f"{field} key", required=True, limit=MAX_TEXT)
            refuse_personal_data(item, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_personal_data(item, f"{field}[{index}]")
    elif isinstance(value, str):
        check_text(value, field, required=False, limit=1000)


def plain_attributes(attributes: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Attributes as JSON the audit log accepts: whole numbers become ints.

    The whole set is limited to 16 KiB of JSON.

    Protobuf's Struct carries every number as a double; a fractional number is
    refused (audit records hash integers and strings only, so that a verifier
    in any language hashes the same bytes).
    """
    if len(json.dumps(attributes, default=str)) > MAX_ATTRIBUTES_JSON:
        raise InvalidRequestError(field, f"exceed {MAX_ATTRIBUTES_JSON} bytes of JSON")
    return {key: _plain(value, f"{field}.{key}") for key, value in attributes.items()}


def _plain(value: Any, field: str) -> Any:
    if isinstance(value, Mapping):
        return plain_attributes(value, field)
    if isinstance(value, list):
        return [_plain(item, f"{field}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidRequestError(
                field,
                "fractional numbers are not accepted; send a string or minor units",
            )
        return int(value)
    return value
