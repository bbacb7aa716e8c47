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
from gateway.callbacks import CallbackServer
from gateway.errors import ConfigurationError, TollgateError
from gateway.policy import (
    RUNTIMES,
    diff_bundles,
    evaluate,
    explain_lines,
    load_bundle,
    read_input,
    replay,
    run_tests,
)
from gateway.store import ContactRef, Store

log = logging.getLogger(__name__)


def _setup_logging(verbose: int) -> None:
    # cel-python logs whole evaluation contexts at debug level and repeats our
    # own rule errors at error level; the engine reports every rule error
    # itself, without values, so celpy stays quiet whatever the verbosity.
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("celpy").setLevel(logging.CRITICAL)


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
    "--unsafe-client-clock",
    is_flag=True,
    help="UNSAFE: honour SendRequest.at, the caller's clock (tests and replays).",
)
@click.option(
    "--cel-runtime",
    type=click.Choice(sorted(RUNTIMES)),
    default=None,
    help="cel-python runner for policies (default interpreted).",
)
@click.option(
    "--callback-listen",
    default="127.0.0.1:0",
    show_default=True,
    help="Loopback address for providers' callbacks (MO, DLR); port 0 picks one.",
)
@click.option(
    "--watch-interval",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between checks of the policy files for changes (0: off).",
)
def serve(
    data_dir: Path | None,
    db: str | None,
    policies: Path | None,
    listen: str,
    outbox_channels: str,
    unsafe_client_clock: bool,
    cel_runtime: str | None,
    callback_listen: str,
    watch_interval: float,
) -> None:
    """Run the gRPC gateway until interrupted.

    The policy bundle is reloaded on SIGHUP and when its files change; a bundle
    that does not load leaves the last good one serving (see GetStatus).
    """
    from gateway.server import build_server

    settings = _settings(data_dir, db, policies)
    settings.outbox_channels = outbox_channels or settings.outbox_channels
    settings.unsafe_client_clock = unsafe_client_clock
    settings.cel_runtime = cel_runtime or settings.cel_runtime
    host, _, callback_port = callback_listen.rpartition(":")
    with _refusing():
        callbacks = _callback_server(host, callback_port)
        settings.callback_url = callbacks.url
        try:
            gateway = build_gateway(settings)
            server, port = build_server(gateway, listen)
        except BaseException:
            callbacks.stop()
            raise
    callbacks.attach(gateway)
    callbacks.start()
    server.start()
    click.echo(
        f"tollgate serving on {listen.rsplit(':', 1)[0]}:{port} "
        f"(bundle {gateway.bundle.hash[:12]}); callbacks at {callbacks.url}"
    )
    stop, wake = threading.Event(), threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    def _reload(signum: int, frame: FrameType | None) -> None:
        wake.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    interval = watch_interval if watch_interval > 0 else 365 * 86400.0
    watcher = threading.Thread(
        target=gateway.holder.watch, args=(stop, wake, interval), daemon=True
    )
    watcher.start()
    stop.wait()
    server.stop(grace=5).wait()
    callbacks.stop()
    gateway.store.close()


def _callback_server(host: str, port: str) -> CallbackServer:
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        raise ConfigurationError(
            f"--callback-listen must be a loopback address like 127.0.0.1:8080, "
            f"found {host}:{port}"
        )
    try:
        return CallbackServer(host, int(port))
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc


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
        head_seq, head_hash = store.audit_head()
    except audit.AuditError as exc:
        click.echo(f"FAIL: {exc}")
        sys.exit(1)
    finally:
        store.close()
    if (head_seq, head_hash) != (summary.head_seq, summary.head_hash):
        click.echo(
            f"FAIL: the store's audit head is record {head_seq} ({head_hash[:16]}...) "
            f"but the chain ends at record {summary.head_seq} "
            f"({summary.head_hash[:16]}...): records were removed or added"
        )
        sys.exit(1)
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
    try:
        with output.open("wb") as out:
            count = audit.write_jsonl(store.audit_records(), out)
    except audit.AuditError as exc:
        click.echo(f"FAIL: {exc}; the export in {output} is incomplete")
        sys.exit(1)
    finally:
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


_folder_arg = click.argument(
    "folder",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=False,
)
_runtime_opt = click.option(
    "--cel-runtime",
    type=click.Choice(sorted(RUNTIMES)),
    default="interpreted",
    show_default=True,
    help="cel-python runner to evaluate with.",
)


@policy.command("test")
@_folder_arg
@_runtime_opt
@click.option(
    "--require-coverage",
    is_flag=True,
    help="Also fail when a rule is not tested on both sides (fired and held).",
)
def policy_test(folder: Path | None, cel_runtime: str, require_coverage: bool) -> None:
    """Run the bundle's own tests (FOLDER/tests/*.yaml), with rule coverage."""
    with _refusing():
        bundle = load_bundle(folder or default_policies(), cel_runtime)
        report = run_tests(bundle)
    for line in report.lines():
        click.echo(line)
    if report.failures:
        sys.exit(1)
    if require_coverage and report.uncovered:
        click.echo(f"not covered on both sides: {', '.join(report.uncovered)}")
        sys.exit(1)


@policy.command("explain")
@click.argument(
    "input_file", type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@_folder_arg
def policy_explain(input_file: Path, folder: Path | None) -> None:
    """Decide one input (YAML: at, contact, message, sends) and explain it."""
    with _refusing():
        bundle = load_bundle(folder or default_policies())
        decision = evaluate(bundle, read_input(input_file))
    for line in explain_lines(decision):
        click.echo(line)


@policy.command("diff")
@click.argument("old", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("new", type=click.Path(path_type=Path, exists=True, file_okay=False))
def policy_diff(old: Path, new: Path) -> None:
    """List policies, rules and caps added, removed and changed."""
    with _refusing():
        result = diff_bundles(load_bundle(old), load_bundle(new))
    for line in result.lines():
        click.echo(line)


@policy.command("replay")
@click.option(
    "--bundle",
    "candidate",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The candidate bundle to replay recorded decisions under.",
)
@_data_opt
@_db_opt
def policy_replay(candidate: Path, data_dir: Path | None, db: str | None) -> None:
    """Re-decide the audit log's decisions under a candidate bundle."""
    settings = _settings(data_dir, db, None)
    with _refusing():
        bundle = load_bundle(candidate)
        store = Store.open(settings.store_url(), migrate=False)
    try:
        decisions = (
            (r.seq, r.body) for r in store.audit_records() if r.kind == "decision"
        )
        report = replay(decisions, bundle)
    finally:
        store.close()
    for line in report.lines():
        click.echo(line)


@main.group()
def contacts() -> None:
    """Look after contacts: consent evidence, erasure."""


def _contact_ref(contact: str) -> ContactRef:
    """A pseudonymous id (ct_...) or, with the ext: prefix, the caller's id."""
    if contact.startswith("ext:"):
        return ContactRef(external_id=contact[4:])
    return ContactRef(contact_id=contact)


@contacts.command("erase")
@click.argument("contact")
@_data_opt
@_db_opt
def contacts_erase(contact: str, data_dir: Path | None, db: str | None) -> None:
    """Erase CONTACT's personal data (ct_... id, or ext:<your id>).

    Phone number, e-mail, address data and attributes are removed; the
    consent ledger and the audit log hold none and stay, so the chain still
    verifies; the erasure itself is appended to the audit log.
    """
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
        try:
            contact_id, seq = store.erase(_contact_ref(contact), datetime.now(UTC))
        finally:
            store.close()
    click.echo(f"erased {contact_id}; audit record {seq}")


@contacts.command("consent")
@click.argument("contact")
@click.option("--channel", default="sms", show_default=True)
@click.option("--purpose", default="marketing", show_default=True)
@_data_opt
@_db_opt
def contacts_consent(
    contact: str, channel: str, purpose: str, data_dir: Path | None, db: str | None
) -> None:
    """Show what the consent ledger says for CONTACT, and its evidence."""
    from gateway.consent import effective

    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
        try:
            snap = store.snapshot(_contact_ref(contact), None)
        finally:
            store.close()
    state = effective(snap.consents, channel, purpose, datetime.now(UTC))
    click.echo(f"{snap.contact_id} {channel}:{purpose}: {state.status}")
    for entry in snap.consents:
        mark = "->" if state.entry is not None and entry.id == state.entry.id else "  "
        grant = "granted" if entry.granted else "revoked"
        click.echo(
            f"{mark} #{entry.id} {entry.recorded_at:%Y-%m-%dT%H:%M:%SZ} "
            f"{entry.channel}:{entry.purpose} {grant} via {entry.source}"
            + (f", {entry.legal_basis}" if entry.granted else "")
            + (f", expires {entry.expires_at:%Y-%m-%d}" if entry.expires_at else "")
            + (", pending confirmation" if entry.pending else "")
            + (
                f", disclosure {entry.disclosure_sha256[:16]}"
                if entry.disclosure_sha256
                else ""
            )
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
