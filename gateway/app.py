"""Assembling a running gateway from its settings.

Settings come from command-line options, else ``TOLLGATE_*`` environment
variables, else defaults: an embedded SQLite file under the data folder and
the default policy bundle shipped in `policies`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gateway.channels import load_registry
from gateway.errors import ConfigurationError
from gateway.reload import BundleHolder
from gateway.service import Gateway, ProgramInfo
from gateway.store import Store

log = logging.getLogger(__name__)


def default_policies() -> Path:
    """The folder of the default policy bundle (installed with the package)."""
    return Path(str(resources.files("policies")))


@dataclass
class Settings:
    data_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("TOLLGATE_DATA", "var"))
    )
    database_url: str = field(default_factory=lambda: os.environ.get("TOLLGATE_DB", ""))
    policies: Path = field(
        default_factory=lambda: Path(
            os.environ.get("TOLLGATE_POLICIES", "") or default_policies()
        )
    )
    outbox_channels: str = field(
        default_factory=lambda: os.environ.get("TOLLGATE_OUTBOX_CHANNELS", "")
    )
    unsafe_client_clock: bool = False
    # where providers call back (MO, DLR); handed to plugins as callback_url
    callback_url: str = ""
    # plugin settings given in code (the demo), over TOLLGATE_PLUGIN_* ones
    plugin_overrides: dict[str, str] = field(default_factory=dict)
    cel_runtime: str = field(
        default_factory=lambda: os.environ.get("TOLLGATE_CEL_RUNTIME", "interpreted")
    )

    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tollgate.db').resolve()}"

    def plugin_settings(self) -> dict[str, str]:
        values = {
            k[len("TOLLGATE_PLUGIN_") :].lower(): v
            for k, v in os.environ.items()
            if k.startswith("TOLLGATE_PLUGIN_")
        }
        values["data_dir"] = str(self.data_dir.resolve())
        values["outbox_channels"] = self.outbox_channels
        values["callback_url"] = self.callback_url
        values.update(self.plugin_overrides)
        if os.environ.get("TOLLGATE_OUTBOX"):
            values["outbox_path"] = os.environ["TOLLGATE_OUTBOX"]
        return values


def build_gateway(settings: Settings, extra_plugins: Iterable[object] = ()) -> Gateway:
    """Open the store, load the bundle and the plugins; refuse on any error."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create data folder {settings.data_dir}: {exc}"
        ) from exc
    holder = BundleHolder(settings.policies, settings.cel_runtime)
    bundle = holder.current
    channels = load_registry(settings.plugin_settings(), extra_plugins)
    store = Store.open(settings.store_url())
    log.info(
        "gateway ready: bundle %s (%d policies), channels %s",
        bundle.hash[:12],
        len(bundle.policies),
        ", ".join(sorted(channels.channels)),
    )
    return Gateway(
        store,
        holder,
        channels,
        unsafe_client_clock=settings.unsafe_client_clock,
        program=program_info(),
    )


def program_info() -> ProgramInfo:
    """The answers to keywords: TOLLGATE_PROGRAM_HELP, _OPT_OUT, _OPT_IN and
    _OPT_IN_DISCLOSURE override the defaults."""
    defaults = ProgramInfo()
    return ProgramInfo(
        help_text=os.environ.get("TOLLGATE_PROGRAM_HELP", defaults.help_text),
        opt_out_text=os.environ.get("TOLLGATE_PROGRAM_OPT_OUT", defaults.opt_out_text),
        opt_in_text=os.environ.get("TOLLGATE_PROGRAM_OPT_IN", defaults.opt_in_text),
        opt_in_disclosure=os.environ.get(
            "TOLLGATE_PROGRAM_OPT_IN_DISCLOSURE", defaults.opt_in_disclosure
        ),
    )
