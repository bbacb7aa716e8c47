"""The ``tollgate`` command: serve, demo, audit, policy and db subcommands.

This is the only entry point that configures logging. Errors the gateway
raises on bad input or settings are printed as one line and exit non-zero.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

import audit
from gateway.app import Settings, build_gateway, default_policies
from gateway.errors import TollgateError
from gateway.policy import load_bundle
from gateway.store import Store

log = logging.getLogger(__name__)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


class _Instant(click.ParamType):  # type: ignore[type-arg]
    name = "instant"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 instant like 2026-12-08T01:30:00Z")
        if moment.tzinfo is None:
            self.fail(f"{value!r} has no UTC offset; add Z or +HH:MM")
        return moment.astimezone(UTC)


def _settings(data_dir: Path | None, db: str | None, policies: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings.data_dir = data_dir
    if db:
        settings.database_url = db
    if policies is not None:
        settings.policies = policies
    return settings


_data_opt = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder for the SQLite store and the outbox "
    "(default ./var or $TOLLGATE_DATA).",
)
_db_opt = click.option(
    "--db",
    help="SQLAlchemy URL of the store "
    "(default: SQLite in the data folder, or $TOLLGATE_DB).",
)
_policies_opt = click.option(
    "--policies",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Policy bundle folder (default: the bundle shipped with Tollgate).",
)


@click.group()
@click.option(
    "-v", "--verbose", count=True, help="More log output (-v info, -vv debug)."
)
def main(verbose: int) -> None:
    """Tollgate: a compliance gateway between campaign tools and channels."""
    _setup_logging(verbose)


@main.command()
@_data_opt
@_db_opt
@_policies_opt
@click.option(
    "--listen",
    default="127.0.0.1:50051",
    show_default=True,
    help="Address to serve gRPC on.",
)
@click.option(
    "--outbox-channels",
    default="",
    help="Channels the outbox plugin also serves, e.g. 'sms'.",
)
@click.option(
    "--allow-client-clock",
    is_flag=True,
    help="Honour SendRequest.at (tests and replays only).",
)
def serve(
    data_dir: Path | None,
    db: str | None,
    policies: Path | None,
    listen: str,
    outbox_channels: str,
    allow_client_clock: bool,
) -> None:
    """Run the gRPC gateway until interrupted."""
    from gateway.server import build_server

    settings = _settings(data_dir, db, policies)
    settings.outbox_channels = outbox_channels or settings.outbox_channels
    settings.allow_client_clock = allow_client_clock
    with _refusing():
        gateway = build_gateway(settings)
        server, port = build_server(gateway, listen)
    server.start()
    click.echo(
        f"tollgate serving on {listen.rsplit(':', 1)[0]}:{port} "
        f"(bundle {gateway.bundle.hash[:12]})"
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    server.stop(grace=5).wait()
    gateway.store.close()


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Folder for the demo's store and outbox; emptied first.",
)
@click.option(
    "--at",
    "at",
    type=_Instant(),
    default=None,
    help="Campaign clock, e.g. 2026-12-08T01:30:00Z (default: now).",
)
@click.option(
    "--limit", type=int, default=0, help="Only the first N customers (0: all)."
)
@click.option(
    "--data",
    "csv_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The bank-marketing CSV (default: the copy shipped in data/).",
)
def demo(
    data_dir: Path, at: datetime | None, limit: int, csv_path: Path | None
) -> None:
    """Route a term-deposit promotion to the UCI bank customers, end to end."""
    from gateway import demo as demo_module

    with _refusing():
        summary = demo_module.run(
            data_dir=data_dir,
            at=at or datetime.now(UTC),
            limit=limit,
            csv_path=csv_path,
        )
    click.echo(summary.report())
    if not summary.chain_ok:
        sys.exit(1)


@main.group(name="audit")
def audit_group() -> None:
    """Inspect and verify the audit log."""


@audit_group.command("verify")
@_data_opt
@_db_opt
def audit_verify(data_dir: Path | None, db: str | None) -> None:
    """Verify the whole hash chain; name the first bad record."""
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
    try:
        summary = audit.verify_chain(store.audit_records())
    except audit.ChainBrokenError as exc:
        click.echo(f"FAIL: {exc}")
        sys.exit(1)
    finally:
        store.close()
    click.echo(
        f"OK: {summary.count} records, "
        f"head seq {summary.head_seq} hash {summary.head_hash}"
    )


@audit_group.command("export")
@_data_opt
@_db_opt
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
def audit_export(data_dir: Path | None, db: str | None, output: Path) -> None:
    """Write the audit log as JSON lines, verifiable with `python -m audit verify`."""
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
    with output.open("wb") as out:
        count = audit.write_jsonl(store.audit_records(), out)
    store.close()
    click.echo(f"wrote {count} records to {output}")


@main.group()
def policy() -> None:
    """Work with policy bundles."""


@policy.command("lint")
@click.argument(
    "folder",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=False,
)
def policy_lint(folder: Path | None) -> None:
    """Load and validate a bundle offline; exit 1 naming the first error."""
    with _refusing():
        bundle = load_bundle(folder or default_policies())
    rules = sum(len(p.rules) + len(p.caps) for p in bundle.policies)
    click.echo(
        f"OK: {len(bundle.policies)} policies, {rules} rules, bundle {bundle.hash}"
    )


@main.group()
def db() -> None:
    """Manage the store."""


@db.command("upgrade")
@_data_opt
@_db_opt
def db_upgrade(data_dir: Path | None, db: str | None) -> None:
    """Create the schema, or bring it to the latest migration."""
    settings = _settings(data_dir, db, None)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _refusing():
        Store.open(settings.store_url()).close()
    click.echo("store is at the latest migration")


class _refusing:
    """Print a gateway error as one line and exit 2, instead of a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, TollgateError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


if __name__ == "__main__":
    main()
