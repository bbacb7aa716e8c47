"""Normalising the identifiers a campaign tool hands us.

Phone numbers become E.164 (validated with phonenumbers), e-mail addresses are
trimmed and lower-cased. A malformed identifier raises `InvalidRequestError`
naming the field; the value itself is never echoed (it is personal data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from gateway.errors import InvalidRequestError

DEFAULT_REGION = "US"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EMAIL_INSIDE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# "+" and 7 or more digits (separators allowed), or a bare run of 10+ digits.
_PHONE_INSIDE = re.compile(r"\+\d[\d\s().-]{5,}\d|\d{10,}")


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


def refuse_personal_data(attributes: Mapping[str, Any], field: str) -> None:
    """Refuse attribute values that look like a phone number or an e-mail.

    Attributes are visible to policies and recorded in the audit log, which
    must hold no personal data; addresses belong in the phone/email fields.
    """
    for key, value in attributes.items():
        if isinstance(value, Mapping):
            refuse_personal_data(value, f"{field}.{key}")
        elif isinstance(value, str) and (
            _EMAIL_INSIDE.search(value) or _PHONE_INSIDE.search(value)
        ):
            raise InvalidRequestError(
                f"{field}.{key}",
                "looks like a phone number or e-mail address; personal data "
                "belongs in the contact's phone or email field, not in attributes",
            )


def plain_attributes(attributes: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Attributes as JSON the audit log accepts: whole numbers become ints.

    Protobuf's Struct carries every number as a double; a fractional number is
    refused (audit records hash integers and strings only, so that a verifier
    in any language hashes the same bytes).
    """
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
