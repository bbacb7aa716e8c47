"""The ``tollgate`` command: serve, demo, audit, policy and db subcommands.

This is the only entry point that configures logging. Errors the gateway
raises on bad input or settings are printed as one line and exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

import audit
from gateway.app import Settings, build_gateway, default_policies
from gateway.callbacks import CallbackServer
from gateway.checkpoints import (
    DEFAULT_ORIGIN,
    KEY_ENV,
    ORIGIN_ENV,
    CheckpointService,
    PeriodicSigner,
    Tree,
    check_tree,
    load_signer_key,
    load_verifier_key,
    parse_stored,
    read_tree,
)
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
    with_tier,
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
@click.option(
    "--audit-key",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=KEY_ENV,
    default=None,
    help="Private key file that signs audit checkpoints "
    "(or $TOLLGATE_AUDIT_KEY; unset: no checkpoints).",
)
@click.option(
    "--checkpoint-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds between audit checkpoints (with --audit-key).",
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
    audit_key: Path | None,
    checkpoint_interval: float,
) -> None:
    """Run the gRPC gateway until interrupted.

    The policy bundle is reloaded on SIGHUP and when its files change; a bundle
    that does not load leaves the last good one serving (see GetStatus).
    With --audit-key, a checkpoint of the audit log is signed every
    --checkpoint-interval seconds and at shutdown; if the stored records
    contradict the last checkpoint, decisions go on but nothing is signed.
    """
    from gateway.server import build_server

    settings = _settings(data_dir, db, policies)
    settings.outbox_channels = outbox_channels or settings.outbox_channels
    settings.unsafe_client_clock = unsafe_client_clock
    settings.cel_runtime = cel_runtime or settings.cel_runtime
    host, _, callback_port = callback_listen.rpartition(":")
    with _refusing():
        signer_key = load_signer_key(audit_key) if audit_key is not None else None
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
    checkpoints = _start_signer(gateway.store, signer_key, checkpoint_interval)
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
    if checkpoints is not None:
        checkpoints.stop()
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
@click.option(
    "--outbox",
    "force_outbox",
    is_flag=True,
    help="Send SMS to the outbox file even when Kannel is installed.",
)
def demo(
    data_dir: Path,
    at: datetime | None,
    limit: int,
    csv_path: Path | None,
    force_outbox: bool,
) -> None:
    """Route a term-deposit promotion to the UCI bank customers, end to end."""
    from gateway import demo as demo_module

    with _refusing():
        summary = demo_module.run(
            data_dir=data_dir,
            at=at or datetime.now(UTC),
            limit=limit,
            csv_path=csv_path,
            use_kannel=False if force_outbox else None,
        )
    click.echo(summary.report())
    if not summary.chain_ok:
        sys.exit(1)


@main.group(name="audit")
def audit_group() -> None:
    """Inspect, sign, prove and verify the audit log."""


_file_arg = click.Path(path_type=Path, dir_okay=False)
_origin_opt = click.option(
    "--origin",
    envvar=ORIGIN_ENV,
    default=DEFAULT_ORIGIN,
    show_default=True,
    help="The log's name on the checkpoint's first line; never changes "
    "(or $TOLLGATE_AUDIT_ORIGIN).",
)


@audit_group.command("verify")
@_data_opt
@_db_opt
@click.option(
    "--key",
    "key_path",
    type=_file_arg,
    help="Verifier (.pub) key file: also check the log against the latest "
    "signed checkpoint.",
)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=_file_arg,
    help="A signed checkpoint file kept outside the store, checked instead of "
    "the store's latest (needs --key).",
)
@click.option(
    "--export",
    "export_path",
    type=_file_arg,
    help="Check this JSON lines export offline, with the audit package alone.",
)
def audit_verify(
    data_dir: Path | None,
    db: str | None,
    key_path: Path | None,
    checkpoint_path: Path | None,
    export_path: Path | None,
) -> None:
    """Verify the whole hash chain; name the first bad record.

    With --key, also check that the store still holds the tree of the latest
    signed checkpoint: no record cut from the end, none rewritten. With
    --export, check an export instead, as `python -m audit verify` does.
    Exit status: 0 verified, 1 verification failed, 2 bad usage.
    """
    if checkpoint_path is not None and key_path is None:
        _usage_error("--checkpoint needs --key, the verifier key to check it with")
    if export_path is not None:
        if key_path is not None and checkpoint_path is None:
            _usage_error("--export with --key needs --checkpoint FILE.checkpoint")
        sys.exit(_verify_export(export_path, checkpoint_path, key_path))
    settings = _settings(data_dir, db, None)
    with _refusing():
        verifier = load_verifier_key(key_path) if key_path is not None else None
        note = _read_file(checkpoint_path) if checkpoint_path is not None else None
        store = Store.open(settings.store_url(), migrate=False)
    try:
        if verifier is not None and note is None:
            note = _latest_note(store)
        signed_size = 0 if note is None else audit.read_unverified(note).size
        # The head first: records a running gateway appends meanwhile lie
        # beyond it and are left for the next verification.
        head_seq, head_hash = store.audit_head()
        tree = read_tree(store.audit_records(upto=head_seq), old_size=signed_size)
        beyond = store.records_beyond_head()
    except audit.AuditError as exc:
        _fail(str(exc))
    finally:
        store.close()
    summary = tree.summary
    if (head_seq, head_hash) != (summary.head_seq, summary.head_hash):
        _fail(
            f"the store's audit head is record {head_seq} ({head_hash[:16]}...) "
            f"but the chain ends at record {summary.head_seq} "
            f"({summary.head_hash[:16]}...): records were removed or added"
        )
    if beyond:
        _fail(
            f"{beyond} audit record(s) lie after the store's audit head (record "
            f"{head_seq}): records were added outside the gateway"
        )
    line = (
        f"OK: {summary.count} records, "
        f"head seq {summary.head_seq} hash {summary.head_hash}"
    )
    if verifier is not None and note is not None:
        checkpoint = _check_against(tree, note, verifier)
        line += (
            f"; matches signed checkpoint {checkpoint.origin} at size {checkpoint.size}"
        )
    click.echo(line)


def _verify_export(
    export_path: Path, checkpoint_path: Path | None, key_path: Path | None
) -> int:
    """Delegate to `python -m audit verify`: the check a verifier runs offline."""
    from audit.__main__ import main as audit_main

    argv = ["verify", str(export_path)]
    if checkpoint_path is not None and key_path is not None:
        argv += ["--checkpoint", str(checkpoint_path), "--key", str(key_path)]
    return audit_main(argv)


def _latest_note(store: Store) -> str:
    stored = store.latest_checkpoint()
    if stored is None:
        _fail(
            "the store holds no signed checkpoint to check against; sign one "
            "with `tollgate audit checkpoint --key FILE`"
        )
    return stored.note


def _check_against(tree: Tree, note: str, verifier: str) -> audit.Checkpoint:
    """Open the signed checkpoint and check the verified tree against it."""
    try:
        checkpoint = audit.open_checkpoint(note, verifier)
        check_tree(tree, checkpoint)
    except audit.AuditError as exc:
        _fail(str(exc))
    return checkpoint


@audit_group.command("export")
@_data_opt
@_db_opt
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
def audit_export(data_dir: Path | None, db: str | None, output: Path) -> None:
    """Write the audit log as JSON lines, verifiable with `python -m audit verify`.

    The latest signed checkpoint, if any, goes to OUTPUT.checkpoint beside it.
    """
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
    try:
        # Read before the records, so the export always covers the checkpoint.
        stored = store.latest_checkpoint()
        with output.open("wb") as out:
            count = audit.write_jsonl(store.audit_records(), out)
    except audit.AuditError as exc:
        _fail(f"{exc}; the export in {output} is incomplete")
    finally:
        store.close()
    click.echo(f"wrote {count} records to {output}")
    if stored is not None:
        checkpoint_path = output.with_name(output.name + ".checkpoint")
        checkpoint_path.write_text(stored.note, encoding="utf-8")
        click.echo(
            f"wrote the signed checkpoint at size {stored.size} to {checkpoint_path}"
        )


@audit_group.command("keygen")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for NAME.key (secret) and NAME.pub ('/' in NAME becomes '_').",
)
def audit_keygen(name: str, out: Path) -> None:
    """Make an Ed25519 key pair that signs audit checkpoints.

    Give the .key file to `tollgate serve --audit-key` (or $TOLLGATE_AUDIT_KEY)
    and the .pub file to whoever verifies. See docs/audit.md for rotation.
    """
    from audit.__main__ import main as audit_main

    out.mkdir(parents=True, exist_ok=True)
    sys.exit(audit_main(["keygen", name, "--out", str(out)]))


@audit_group.command("checkpoint")
@_data_opt
@_db_opt
@click.option(
    "--key",
    "key_path",
    type=_file_arg,
    envvar=KEY_ENV,
    required=True,
    help="Private key file written by `tollgate audit keygen` "
    "(or $TOLLGATE_AUDIT_KEY).",
)
@_origin_opt
def audit_checkpoint(
    data_dir: Path | None, db: str | None, key_path: Path, origin: str
) -> None:
    """Sign a checkpoint of the audit log now, if it grew since the last one."""
    settings = _settings(data_dir, db, None)
    with _refusing():
        key = load_signer_key(key_path)
        store = Store.open(settings.store_url(), migrate=False)
    try:
        stored = CheckpointService(store, key, origin).sign_now()
        latest = stored or store.latest_checkpoint()
    except audit.AuditError as exc:
        _fail(f"no checkpoint signed: {exc}")
    finally:
        store.close()
    if stored is not None:
        click.echo(
            f"signed checkpoint {origin} at size {stored.size}, "
            f"root {stored.root_hex}, key {stored.key_name}"
        )
    elif latest is not None:
        click.echo(f"nothing new since the checkpoint at size {latest.size}")
    else:
        click.echo("the audit log is empty; nothing to sign")


@audit_group.command("prove")
@click.argument("seq", type=int)
@click.option(
    "--out", type=_file_arg, required=True, help="Where to write the proof (JSON)."
)
@_data_opt
@_db_opt
def audit_prove(seq: int, out: Path, data_dir: Path | None, db: str | None) -> None:
    """Prove that record SEQ is in the signed log, without the rest of the log.

    Needs a signed checkpoint covering SEQ (`tollgate audit checkpoint`);
    anyone holding the public key checks the file with `verify-proof`.
    """
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
    try:
        stored = store.latest_checkpoint()
        if seq < 1 or stored is None or stored.size < seq:
            covered = "none" if stored is None else f"records 1 to {stored.size}"
            _usage_error(
                f"no signed checkpoint covers record {seq} (signed: {covered}); "
                "sign one first with `tollgate audit checkpoint --key FILE`"
            )
        proof = _record_proof(store, seq, stored.note, parse_stored(stored))
    except audit.AuditError as exc:
        _fail(str(exc))
    finally:
        store.close()
    out.write_text(proof.to_json(), encoding="utf-8")
    click.echo(
        f"wrote the proof of record {seq} in the signed log of size "
        f"{proof.tree_size} to {out}"
    )


def _record_proof(
    store: Store, seq: int, note: str, checkpoint: audit.Checkpoint
) -> audit.RecordProof:
    """Build the proof of record `seq` against the stored `checkpoint`.

    Plan:
      1. hash the checkpoint's tree, and the record's path in it, in one
         pass over the records;
      2. they are all there and give the signed root (else it proves nothing);
      3. take the record and its inclusion proof.
    """
    # Step 1: the signed tree, and the path, as the leaves stream by.
    tree = audit.StreamingTree(checkpoint.size, index=seq - 1)
    for leaf in store.leaf_hashes(checkpoint.size):
        tree.append(leaf)

    # Step 2: still the tree that was signed.
    if tree.size < checkpoint.size:
        raise audit.CheckpointError(
            f"the store holds {tree.size} records, but the checkpoint covers "
            f"{checkpoint.size}: records cut from the end (log truncated)"
        )
    if tree.root() != checkpoint.root_hash:
        raise audit.CheckpointError(
            f"the first {checkpoint.size} records no longer give the signed root "
            f"{checkpoint.root_hash.hex()} (records rewritten)"
        )

    # Step 3: the record and its path to the root.
    record = store.audit_record(seq)
    if record is None:
        raise audit.CheckpointError(f"record {seq} is missing from the store")
    path = [node.hex() for node in tree.inclusion_proof()]
    return audit.RecordProof(record, seq - 1, checkpoint.size, path, note)


@audit_group.command("verify-proof")
@click.argument("proof_path", metavar="PROOF.json", type=_file_arg)
@click.option(
    "--key",
    "key_path",
    type=_file_arg,
    required=True,
    help="Verifier (.pub) key file of the log.",
)
def audit_verify_proof(proof_path: Path, key_path: Path) -> None:
    """Check a record proof with the log's public key (the audit package's check)."""
    with _refusing():
        key = load_verifier_key(key_path)
        text = _read_file(proof_path)
    try:
        proof = audit.RecordProof.from_json(text)
        audit.verify_record_proof(proof, key)
    except audit.AuditError as exc:
        _fail(str(exc))
    click.echo(
        f"OK: record {proof.record.seq} ({proof.record.hash}) is in the signed log "
        f"of size {proof.tree_size}"
    )


@audit_group.command("history")
@click.argument("contact")
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of text.")
@_data_opt
@_db_opt
def audit_history(
    contact: str, as_json: bool, data_dir: Path | None, db: str | None
) -> None:
    """List every audit record about CONTACT (a ct_... id), oldest first.

    Decisions (outcome, deciding rules, consent evidence entry), deliveries,
    delivery reports, consent changes, events, replies and the erasure. The
    records hold no personal data, so neither does the listing.
    """
    if not contact.startswith("ct_"):
        # not echoed: it may be a phone number or e-mail address
        _usage_error("CONTACT must be a pseudonymous contact id (ct_...)")
    settings = _settings(data_dir, db, None)
    with _refusing():
        store = Store.open(settings.store_url(), migrate=False)
    try:
        entries = (
            _history_entry(r, contact) for r in store.contact_audit_records(contact)
        )
        if as_json:
            _echo_json_list(entries)
        else:
            _echo_history(entries, contact)
    except audit.AuditError as exc:
        _fail(str(exc))
    finally:
        store.close()


def _echo_history(entries: Iterable[dict[str, Any]], contact: str) -> None:
    count = 0
    for entry in entries:
        if not count:
            click.echo(f"{'seq':>8}  {'recorded_at':<27}  {'kind':<15}  summary")
        count += 1
        click.echo(
            f"{entry['seq']:>8}  {entry['recorded_at']:<27}  {entry['kind']:<15}  "
            f"{entry['summary']}"
        )
    if not count:
        click.echo(f"no audit records about {contact}")


def _echo_json_list(entries: Iterable[dict[str, Any]]) -> None:
    """Write a JSON list one element at a time (the history may be long)."""
    separator = "[\n"
    for entry in entries:
        click.echo(separator + "  " + json.dumps(entry, sort_keys=True), nl=False)
        separator = ",\n"
    click.echo("[]" if separator == "[\n" else "\n]")


def _history_entry(record: audit.AuditRecord, contact: str) -> dict[str, Any]:
    """One line of `contact`'s history: what the record says, in brief."""
    body = dict(record.body)
    if record.kind == "audience_sync":  # a sync of many: this contact's part
        body["change"] = (
            "added to" if contact in body.get("added", ()) else ("removed from")
        )
    describe = _SUMMARIES.get(record.kind, _summarise_other)
    summary, details = describe(body)
    return {
        "seq": record.seq,
        "recorded_at": record.recorded_at,
        "kind": record.kind,
        "summary": summary,
        "details": details,
    }


_Summary = tuple[str, dict[str, Any]]


def _summarise_decision(body: Mapping[str, Any]) -> _Summary:
    message = body.get("context", {}).get("message", {})
    details = {
        "outcome": body.get("outcome", ""),
        "channel": body.get("channel", ""),
        "purpose": body.get("purpose", ""),
        "campaign": body.get("campaign", ""),
        "rules": [r.get("rule_id", "") for r in body.get("reasons", [])],
        "consent_entry": message.get("consent_entry", 0),
        "bundle_hash": body.get("bundle_hash", ""),
    }
    entry = details["consent_entry"]
    summary = (
        f"{details['outcome']} {details['channel']}:{details['purpose']} "
        f"campaign {details['campaign'] or '-'}; rules "
        f"{', '.join(details['rules']) or 'none'}; consent evidence "
        + (f"entry #{entry}" if entry else "none")
    )
    return summary, details


def _summarise_delivery(body: Mapping[str, Any]) -> _Summary:
    details = {
        "status": body.get("status", ""),
        "channel": body.get("channel", ""),
        "decision_seq": body.get("decision_seq", 0),
        "error": body.get("error", "") or body.get("detail", ""),
    }
    summary = (
        f"{details['status']} on {details['channel']} for decision "
        f"{details['decision_seq']}"
        + (f": {details['error']}" if details["error"] else "")
    )
    return summary, details


def _summarise_consent(body: Mapping[str, Any]) -> _Summary:
    details = {
        "channel": body.get("channel", ""),
        "purpose": body.get("purpose", ""),
        "granted": bool(body.get("granted")),
        "source": body.get("source", ""),
        "legal_basis": body.get("legal_basis", ""),
        "pending": bool(body.get("pending")),
    }
    summary = (
        f"{details['channel']}:{details['purpose']} "
        f"{'granted' if details['granted'] else 'revoked'} via {details['source']}"
        + (f", {details['legal_basis']}" if details["granted"] else "")
        + (", pending confirmation" if details["pending"] else "")
    )
    return summary, details


def _summarise_event(body: Mapping[str, Any]) -> _Summary:
    details = {"event": body.get("kind", ""), "stage": body.get("stage", "")}
    return f"{details['event']}; stage now {details['stage']}", details


def _summarise_inbound(body: Mapping[str, Any]) -> _Summary:
    details = {
        "channel": body.get("channel", ""),
        "intent": body.get("intent", ""),
        "keyword": body.get("keyword", ""),
    }
    summary = f"reply on {details['channel']}: {details['intent']}" + (
        f" ({details['keyword']})" if details["keyword"] else ""
    )
    return summary, details


def _summarise_erasure(body: Mapping[str, Any]) -> _Summary:
    details = {"erased_at": body.get("erased_at", "")}
    return f"personal data erased at {details['erased_at']}", details


def _summarise_audience_decision(body: Mapping[str, Any]) -> _Summary:
    details = {
        "outcome": body.get("outcome", ""),
        "platform": body.get("platform", ""),
        "audience_id": body.get("audience_id", ""),
        "tier": body.get("tier", ""),
        "rules": list(body.get("reasons", [])),
        "bundle_hash": body.get("bundle_hash", ""),
    }
    summary = (
        f"{details['outcome']} membership of {details['platform']} audience "
        f"{details['audience_id']} (tier {details['tier'] or 'none'}); rules "
        f"{', '.join(details['rules']) or 'none'}"
    )
    return summary, details


def _summarise_audience_sync(body: Mapping[str, Any]) -> _Summary:
    details = {
        "change": body.get("change", ""),
        "platform": body.get("platform", ""),
        "audience_id": body.get("audience_id", ""),
    }
    summary = (
        f"{details['change']} {details['platform']} audience {details['audience_id']}"
    )
    return summary, details


def _summarise_other(body: Mapping[str, Any]) -> _Summary:
    return "", {}


_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], _Summary]] = {
    "decision": _summarise_decision,
    "delivery": _summarise_delivery,
    "delivery_report": _summarise_delivery,
    "consent": _summarise_consent,
    "event": _summarise_event,
    "inbound": _summarise_inbound,
    "erasure": _summarise_erasure,
    "audience_decision": _summarise_audience_decision,
    "audience_sync": _summarise_audience_sync,
}


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise ConfigurationError(f"cannot read {path}: {reason}") from exc


def _fail(message: str) -> NoReturn:
    """A failed verification: one line, exit status 1."""
    click.echo(f"FAIL: {message}")
    sys.exit(1)


def _usage_error(message: str) -> NoReturn:
    """A command that cannot run as given: one line, exit status 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _start_signer(
    store: Store, key: str | None, interval: float
) -> PeriodicSigner | None:
    """Sign checkpoints in the background, if a key was given (fails closed)."""
    if key is None:
        return None
    origin = os.environ.get(ORIGIN_ENV) or DEFAULT_ORIGIN
    signer = PeriodicSigner(CheckpointService(store, key, origin), interval)
    if signer.start():
        click.echo(f"signing audit checkpoints of {origin} every {interval:g}s")
    else:
        click.echo(
            "error: audit checkpoint signing refused (see the log); serving "
            "decisions, signing nothing",
            err=True,
        )
    return signer


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
        given = with_tier(bundle, read_input(input_file))
        decision = evaluate(bundle, given)
    for line in explain_lines(decision, tier=str(given.contact["tier"])):
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
