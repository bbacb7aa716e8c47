"""The declared policy context: every name and function a policy may use.

This is the contract between the gateway and the policy bundle. The gateway
builds exactly these values for each decision (`gateway.service`), and the
loader type-checks every expression against them, so a misspelt field is a
refused bundle, not a rule that fails at three in the morning.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from gateway.policy._typecheck import (
    BOOL,
    DURATION,
    DYN,
    INT,
    STRING,
    TIMESTAMP,
    CelType,
    FunctionSig,
    TypeEnv,
    list_of,
    map_of,
    record,
)

# The purposes a message may have (the gRPC contract's Purpose enum).
PURPOSES = (
    "marketing",
    "reminder",
    "transactional",
    "opt_out_confirmation",
    "advertising",  # membership of an ad audience (SyncAudience)
)

# Past sends are kept in the policy context for at least this long, so that
# `sends_in(duration)` can look back a week even when no cap needs it.
SENDS_HORIZON = timedelta(days=7)

CONTACT = record(
    "contact",
    {
        "id": STRING,
        "stage": STRING,
        "tier": STRING,
        "tier_roles": map_of(STRING, list_of(STRING)),
        "tier_caps": map_of(STRING, INT),
        "do_not_contact": BOOL,
        "sms_capable": BOOL,
        "attributes": map_of(STRING, DYN),
        "time_zones": list_of(STRING),
        "time_zone_source": STRING,
        "regions": list_of(STRING),
        "consent": map_of(STRING, STRING),
    },
)
MESSAGE = record(
    "message",
    {
        "channel": STRING,
        "purpose": STRING,
        "campaign": STRING,
        "consent": STRING,
        "consent_basis": STRING,
        "consent_entry": INT,
        "opt_out_confirmation_due": BOOL,
        "address_kind": STRING,
        "body_length": INT,
    },
)
WINDOW = map_of(STRING, STRING)
ZONES = list_of(STRING)

HOST_SIGNATURES = (
    FunctionSig("inside_window", (TIMESTAMP, ZONES, STRING, STRING), BOOL),
    FunctionSig("next_allowed", (TIMESTAMP, ZONES, STRING, STRING), TIMESTAMP),
    FunctionSig("strictest_window", (map_of(STRING, DYN), list_of(STRING)), WINDOW),
    FunctionSig("local_time", (TIMESTAMP, STRING), STRING),
    FunctionSig("next_local_day", (TIMESTAMP, ZONES), TIMESTAMP),
    FunctionSig(
        "no_solicitation_day",
        (list_of(DYN), list_of(STRING), TIMESTAMP, ZONES),
        BOOL,
    ),
    FunctionSig("sends_in", (DURATION, STRING, STRING), INT, optional=2),
)


def _data_type(data: Mapping[str, Any]) -> CelType:
    fields = {
        name: map_of(STRING, DYN) if isinstance(value, dict) else list_of(DYN)
        for name, value in data.items()
    }
    return record("data", fields)


def variable_types(data: Mapping[str, Any]) -> Mapping[str, CelType]:
    """The names every expression may use, given the bundle's data files."""
    return {
        "now": TIMESTAMP,
        "contact": CONTACT,
        "message": MESSAGE,
        "client": map_of(STRING, DYN),
        "data": _data_type(data),
    }


def type_env(variables: Mapping[str, CelType]) -> TypeEnv:
    return TypeEnv(variables=dict(variables), functions=HOST_SIGNATURES)
