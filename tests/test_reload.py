"""Hot reload: a valid bundle is swapped in atomically, a bad one never is."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from gateway.app import default_policies
from gateway.reload import BundleHolder
from gateway.service import SendInput
from support import AT, GatewayFactory, add_contact
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc


def _bundle_copy(folder: Path) -> Path:
    shutil.copytree(
        default_policies(),
        folder,
        ignore=shutil.ignore_patterns("tests", "*.py", "__pycache__"),
    )
    return folder


def _tighten_cap(folder: Path, new_max: int = 2) -> None:
    path = folder / "frequency-caps.yaml"
    text = path.read_text().replace("max: 3", f"max: {new_max}")
    path.write_text(text)


def _break(folder: Path) -> None:
    path = folder / "suppression.yaml"
    path.write_text(path.read_text().replace("contact.stage ==", "contact.stge =="))


def test_a_valid_change_is_swapped_in(tmp_path: Path) -> None:
    folder = _bundle_copy(tmp_path / "bundle")
    holder = BundleHolder(folder)
    before = holder.current.hash
    _tighten_cap(folder)
    assert holder.reload()
    status = holder.status()
    assert status.hash != before and status.reloads == 1 and status.failures == 0
    caps = {c.id: c.max for p in holder.current.policies for c in p.caps}
    assert caps["frequency-caps.marketing-3-per-24h"] == 2


def test_a_bad_bundle_leaves_the_last_good_one_serving(tmp_path: Path) -> None:
    folder = _bundle_copy(tmp_path / "bundle")
    holder = BundleHolder(folder)
    good = holder.current
    _break(folder)
    assert not holder.reload()
    status = holder.status()
    assert holder.current is good and status.hash == good.hash
    assert status.failures == 1 and status.reloads == 0
    assert "suppression.yaml" in status.last_error and "stge" in status.last_error
    assert status.last_error_at is not None


def test_the_watcher_reloads_when_files_change(tmp_path: Path) -> None:
    folder = _bundle_copy(tmp_path / "bundle")
    holder = BundleHolder(folder)
    before = holder.current.hash
    stop, wake = threading.Event(), threading.Event()
    watcher = threading.Thread(target=holder.watch, args=(stop, wake, 0.05))
    watcher.start()
    try:
        time.sleep(0.01)  # a later mtime than the first fingerprint
        _tighten_cap(folder)
        for _ in range(200):  # bounded wait: at most 10 s
            if holder.current.hash != before:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        wake.set()
        watcher.join(timeout=10)
    assert holder.current.hash != before


def test_each_decision_records_the_bundle_that_decided_it(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    folder = _bundle_copy(tmp_path / "bundle")
    gateway = make_gateway(policies=folder)
    ref = add_contact(gateway)

    def send(key: str) -> dict[str, object]:
        request = SendInput(ref, "sms", "marketing", "c", "hello", key, at=AT)
        return gateway.send(request)

    first = send("k1")
    _tighten_cap(folder, 1)
    assert gateway.holder.reload()
    second = send("k2")
    decisions = [r for r in gateway.store.audit_records() if r.kind == "decision"]
    hashes = [r.body["bundle_hash"] for r in decisions]
    assert hashes == [
        first["decision"]["bundle_hash"],
        second["decision"]["bundle_hash"],
    ]
    assert hashes[0] != hashes[1]
    assert second["decision"]["outcome"] == "DEFER"  # the new cap of 1 decided


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(stub: pb_grpc.GatewayStub) -> pb.GetStatusResponse:
    return stub.GetStatus(pb.GetStatusRequest())


def _wait_for(stub: pb_grpc.GatewayStub, check: object) -> pb.GetStatusResponse:
    status = _status(stub)
    for _ in range(300):  # bounded: at most 30 s, for a loaded machine
        if check(status):  # type: ignore[operator]
            return status
        time.sleep(0.1)
        status = _status(stub)
    return status


@pytest.mark.parametrize("trigger", ["sighup", "file-change"])
def test_serve_reloads_and_reports_through_get_status(
    tmp_path: Path, trigger: str
) -> None:
    folder = _bundle_copy(tmp_path / "bundle")
    port = _free_port()
    interval = "0" if trigger == "sighup" else "0.1"
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path),
         "--listen", f"127.0.0.1:{port}", "--policies", str(folder),
         "--watch-interval", interval],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.GatewayStub(channel)
            first = _status(stub)
            time.sleep(0.01)
            _tighten_cap(folder)
            if trigger == "sighup":
                server.send_signal(signal.SIGHUP)
            second = _wait_for(stub, lambda s: s.bundle_hash != first.bundle_hash)
            _break(folder)
            if trigger == "sighup":
                server.send_signal(signal.SIGHUP)
            third = _wait_for(stub, lambda s: s.reload_failures > 0)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert second.bundle_hash != first.bundle_hash and second.reloads == 1
    assert third.bundle_hash == second.bundle_hash
    assert third.reload_failures == 1 and "stge" in third.last_reload_error
    assert "NOT reloaded" in err
