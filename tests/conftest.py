"""Shared fixtures: a store on each backend, a gateway, a live gRPC server.

The store's tests run on SQLite and on PostgreSQL. The PostgreSQL server is
named by TOLLGATE_TEST_PG_URL (default: the local server on 127.0.0.1:5432,
database `test`); each test gets a schema of its own, dropped afterwards. If
the server cannot be reached the PostgreSQL tests fail: `.ci/run` starts it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from gateway.app import Settings, build_gateway
from gateway.server import build_server
from gateway.service import Gateway
from support import GatewayFactory
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

PG_URL = os.environ.get(
    "TOLLGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is not reachable ({exc.orig}); "
            "start it (bash .ci/run does) or set TOLLGATE_TEST_PG_URL"
        )
    schema = "t_" + secrets.token_hex(6)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tollgate.db'}"
    else:
        yield from _postgres_schema_url(request)


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Build gateways on a given store URL (SQLite in tmp_path by default)."""
    built: list[Gateway] = []

    def make(
        url: str = "",
        policies: Path | None = None,
        plugins: tuple[object, ...] = (),
        outbox_channels: str = "sms",
    ) -> Gateway:
        settings = Settings(
            data_dir=tmp_path,
            database_url=url,
            outbox_channels=outbox_channels,
            unsafe_client_clock=True,
        )
        if policies is not None:
            settings.policies = policies
        gateway = build_gateway(settings, plugins)
        built.append(gateway)
        return gateway

    yield make
    for gateway in built:
        gateway.store.close()


@pytest.fixture
def gateway(make_gateway: GatewayFactory, store_url: str) -> Gateway:
    """A gateway on each store backend, with the default bundle."""
    return make_gateway(store_url)


@pytest.fixture
def grpc_stub(
    make_gateway: GatewayFactory, store_url: str
) -> Iterator[tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel]]:
    """A real server on a free loopback port, and a real client for it."""
    gateway = make_gateway(store_url)
    server, port = build_server(gateway, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.GatewayStub(channel), gateway, channel
    finally:
        channel.close()
        server.stop(grace=None).wait()
