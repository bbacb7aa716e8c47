"""Loading channel plugins and handing them allowed messages.

Every plugin, built-in or third-party, is found through the ``tollgate``
entry-point group and speaks only the hooks of `gateway.hookspecs`. A plugin's
exception or malformed answer is turned into a failed `DeliveryResult` here, at
the one boundary, so that nothing a plugin does can crash a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import pluggy

from gateway import hookspecs
from gateway.errors import PluginError, UnknownChannelError
from gateway.hookspecs import (
    AudienceChange,
    AudienceSyncResult,
    DeliveryReport,
    DeliveryResult,
    InboundReply,
    OutboundMessage,
)

log = logging.getLogger(__name__)

ADDRESS_KINDS = ("phone", "email")


class ChannelRegistry:
    """The loaded plugins and the channel each one serves."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self._pm = manager
        self._owners: dict[str, str] = {}
        self._address_kinds: dict[str, str] = {}
        for plugin, channels in self._claims():
            for channel, kind in channels.items():
                self._claim(channel, kind, plugin)

    def _claims(self) -> Iterable[tuple[str, Mapping[str, str]]]:
        for impl in self._pm.hook.tollgate_channels.get_hookimpls():
            channels = impl.function()
            if not isinstance(channels, Mapping) or not all(
                isinstance(c, str) and c and k in ADDRESS_KINDS
                for c, k in channels.items()
            ):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: tollgate_channels must return "
                    "a mapping of channel name to address kind "
                    f"({', '.join(ADDRESS_KINDS)}), got {channels!r}"
                )
            yield impl.plugin_name, channels

    def _claim(self, channel: str, kind: str, plugin: str) -> None:
        if channel in self._owners:
            raise PluginError(
                f"channel {channel!r} is claimed by both plugin "
                f"{self._owners[channel]!r} and plugin {plugin!r}"
            )
        self._owners[channel] = plugin
        self._address_kinds[channel] = kind

    @property
    def channels(self) -> Mapping[str, str]:
        """Channel name → name of the plugin serving it."""
        return dict(self._owners)

    def address_kind(self, channel: str) -> str:
        """The kind of address ("phone" or "email") that `channel` needs."""
        self.require(channel)
        return self._address_kinds[channel]

    def require(self, channel: str) -> None:
        """Raise `UnknownChannelError` unless some plugin serves `channel`."""
        if channel not in self._owners:
            known = ", ".join(sorted(self._owners)) or "none"
            raise UnknownChannelError(
                f"no plugin serves channel {channel!r} (served: {known})"
            )

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        """Hand `message` to its plugin; never raises for a plugin's fault."""
        self.require(message.channel)
        try:
            result = self._pm.hook.tollgate_deliver(message=message)
        except Exception as exc:  # a plugin's fault is a failed delivery
            log.warning(
                "plugin for channel %s raised %s for contact %s",
                message.channel,
                type(exc).__name__,
                message.contact_id,
            )
            return DeliveryResult(error=f"plugin raised {type(exc).__name__}")
        return _checked(message.channel, result)

    def parse_callback(
        self, channel: str, kind: str, query: Mapping[str, str]
    ) -> InboundReply | DeliveryReport:
        """Ask the channel's plugin to read a provider callback."""
        self.require(channel)
        try:
            event = self._pm.hook.tollgate_parse_callback(
                channel=channel, kind=kind, query=dict(query)
            )
        except ValueError as exc:
            raise PluginError(f"callback for {channel!r}/{kind!r}: {exc}") from exc
        except Exception as exc:  # a plugin's fault
            raise PluginError(
                f"plugin for {channel!r} raised {type(exc).__name__} on a callback"
            ) from exc
        if not isinstance(event, InboundReply | DeliveryReport):
            raise PluginError(f"no plugin understood the callback {channel!r}/{kind!r}")
        return event

    def audience_platforms(self) -> list[str]:
        """Every ad platform some plugin syncs audiences to."""
        names: list[str] = []
        for found in self._pm.hook.tollgate_audience_platforms():
            names.extend(str(n) for n in found or ())
        return sorted(set(names))

    def sync_audience(self, change: AudienceChange) -> AudienceSyncResult:
        """Hand an audience change to its platform's plugin; never raises for
        a plugin's fault (it becomes the result's error)."""
        if change.platform not in self.audience_platforms():
            known = ", ".join(self.audience_platforms()) or "none"
            raise UnknownChannelError(
                f"no plugin syncs audiences to {change.platform!r} (known: {known})"
            )
        try:
            result = self._pm.hook.tollgate_sync_audience(change=change)
        except Exception as exc:  # a plugin's fault is a failed sync
            log.warning(
                "audience plugin for %s raised %s", change.platform, type(exc).__name__
            )
            return AudienceSyncResult(error=f"plugin raised {type(exc).__name__}")
        if not isinstance(result, AudienceSyncResult):
            return AudienceSyncResult(
                error=f"plugin for {change.platform!r} answered "
                f"{type(result).__name__}, expected AudienceSyncResult"
            )
        return result


def _checked(channel: str, result: object) -> DeliveryResult:
    if not isinstance(result, DeliveryResult):
        return DeliveryResult(
            error=f"plugin for {channel!r} answered {type(result).__name__}, "
            "expected DeliveryResult"
        )
    if bool(result.provider_message_id) == bool(result.error):
        return DeliveryResult(
            error=f"plugin for {channel!r} must set exactly one of "
            "provider_message_id and error"
        )
    return result


def load_registry(
    settings: Mapping[str, str], extra_plugins: Iterable[object] = ()
) -> ChannelRegistry:
    """Load every installed plugin, configure it and map its channels.

    `extra_plugins` are registered as well (tests use it for a plugin object
    that is not installed as a distribution).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.hook.tollgate_configure(settings=dict(settings))
    registry = ChannelRegistry(pm)
    log.info("channels loaded: %s", ", ".join(sorted(registry.channels)))
    return registry
