"""Every error the gateway raises on bad input or a failed dependency.

One root, `TollgateError`; every name ends in `Error`. Bad untrusted input
(a request, a policy file, a plugin's answer) raises one of these; misuse of
the Python API raises `ValueError` or `TypeError` instead.
"""

from __future__ import annotations


class TollgateError(Exception):
    """Root of the gateway's errors."""


class InvalidRequestError(TollgateError):
    """A request field is malformed; `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class KeyReusedError(InvalidRequestError):
    """An idempotency key already answered a different request."""


class ConsentConflictError(TollgateError):
    """A consent change the ledger refuses (an import re-granting a revocation)."""


class ContactNotFoundError(TollgateError):
    """The contact a request refers to is not in the store."""


class PolicyError(TollgateError):
    """A policy bundle could not be loaded; the message names file and rule."""


class PluginError(TollgateError):
    """A channel plugin failed or answered something other than its contract."""


class UnknownChannelError(PluginError):
    """No plugin serves the requested channel."""


class StoreError(TollgateError):
    """The store could not be opened, migrated or written."""


class ConfigurationError(TollgateError):
    """The gateway's own settings are unusable (address, folder, URL)."""
