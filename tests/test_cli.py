"""The tollgate command as a user runs it: serve, lint, db upgrade."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import default_policies
from gateway.cli import main
from gateway.policy import load_bundle


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_health_checks_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"serving on 127.0.0.1:{port}" in out
    assert (tmp_path / "tollgate.db").exists()


def test_serve_refuses_a_broken_bundle_naming_it(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "broken.yaml").write_text("id: [unclosed\n")
    result = CliRunner().invoke(
        main, ["serve", "--data-dir", str(tmp_path), "--policies", str(bundle)]
    )
    assert result.exit_code == 2
    assert "broken.yaml:2:1: not valid YAML" in result.output


def test_policy_lint_accepts_the_default_bundle() -> None:
    result = CliRunner().invoke(main, ["policy", "lint"])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(default_policies())
    counts = f"OK: {len(bundle.policies)} policies, {len(bundle.rule_ids())} rules"
    assert result.output.startswith(f"{counts}, bundle {bundle.hash}")


def test_db_upgrade_creates_the_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    verify = CliRunner().invoke(main, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert verify.exit_code == 0 and verify.output.startswith("OK: 0 records")


def test_demo_refuses_an_instant_without_offset(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--at", "2026-12-08T01:30", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "no UTC offset" in result.output


def test_the_policy_benchmark_runs_on_inputs_that_match_the_context() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "bench_policy.py"),
            "--decisions",
            "8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interpreted" in done.stdout and "compiled" in done.stdout
