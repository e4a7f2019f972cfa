"""The leader lock: at most one holder across all hub processes on one store, for work that must run once (the
scheduler: two schedulers on one job store ran a one-off job twice).

On PostgreSQL a session advisory lock on a connection of its own; on SQLite an exclusive flock on a file beside
the database (one host, as SQLite is). Either way the holder's death releases it at once: the server ends a
killed process's session, the kernel closes its files. Nothing to expire, nothing to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from hub.store import advisory_key


class LeaderLock:
    def __init__(self, store_url: str, name: str) -> None:
        self.name = name
        self._url = make_url(store_url)
        self._connection: Connection | None = None  # PostgreSQL: the session holding the advisory lock
        self._file: int | None = None  # SQLite: the locked file's descriptor
        if self._url.get_backend_name() == "sqlite":
            if not self._url.database or self._url.database == ":memory:":
                raise ValueError("a leader lock on SQLite needs a database file to lock beside")
            self._path = Path(f"{self._url.database}.{name}.lock")
        else:
            self._key = advisory_key(f"leader {name}")

    def acquire(self) -> bool:
        """Take the lock if no one holds it; True if this process holds it now. Never waits."""
        if self.holds():
            return True
        if self._url.get_backend_name() == "sqlite":
            return self._lock_file()
        engine = create_engine(self._url, poolclass=NullPool)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar():
            self._connection = conn
            return True
        conn.close()
        return False

    def holds(self) -> bool:
        """Whether this process still holds the lock: a PostgreSQL session that broke (server restart, network)
        lost it, and the server may have given it to another process since."""
        if self._file is not None:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
        except DBAPIError:
            self._drop_connection()
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            os.close(self._file)  # closing the descriptor drops its flock
            self._file = None
        if self._connection is not None:
            self._drop_connection()  # ending the session drops its advisory locks

    def _lock_file(self) -> bool:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._file = fd
        return True

    def _drop_connection(self) -> None:
        assert self._connection is not None
        with contextlib.suppress(DBAPIError):  # already broken: the session, and with it the lock, is gone
            self._connection.close()
        self._connection.engine.dispose()
        self._connection = None
