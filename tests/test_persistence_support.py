"""Shared fixtures for the persistence and recorder tests (no tests in this module).

``db_url`` is parametrized over SQLite (a file in ``tmp_path``) and PostgreSQL. PostgreSQL
comes from ``TEST_DATABASE_URL`` (CI: ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
without it those cases are skipped with the reason "TEST_DATABASE_URL not set". Each
PostgreSQL test gets its own schema (``search_path`` set through the URL), dropped afterwards,
so tests never collide with each other or with other suites using the same database.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import trio
from sqlalchemy.engine import make_url

PG_ENV = "TEST_DATABASE_URL"


def pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} not set")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections use a fresh, private schema."""
    base = pg_base_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path / 'trading.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


class TcpProxy:
    """A loopback TCP proxy that can be stopped and restarted on the same port.

    Stands in for a database server going away and coming back: while stopped, connections
    are refused and the live ones are cut.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self.target)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:

                async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                    try:
                        while data := await src.receive_some(65536):
                            await dst.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, upstream)
                nursery.start_soon(pump, upstream, client)

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._serve)

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
