"""The SQL database every service keeps its state in, at DATABASE_URL: a
SQLite file by default (one replica of each service), PostgreSQL when
replicas share it. Opening it applies the migrations (ridesync/migrations/).

Transactions are per thread: `transaction()` opens one, and store methods
called inside it join it, so a message's changes, the outbox rows they
publish and the record that the message was handled commit together."""
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from select import POLLIN, poll

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import bindparam, create_engine, event, insert, literal_column, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from ridesync.rabbit import Retry
from ridesync.settings import process_settings
from ridesync.tables import handled_messages

log = logging.getLogger(__name__)

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
RESTARTING = ("Connection refused", "the database system is starting up", "the database system is shutting down")
RESTART_RETRY_PAUSE = 0.05  # seconds between connection attempts while PostgreSQL restarts
MIGRATION_LOCK = 0x7269646573796E63  # "ridesync": replicas starting at once migrate one at a time


def engine_for(url):
    """An Engine for url: postgresql:// is driven by psycopg 3; SQLite in WAL
    mode, every transaction taking the write lock at BEGIN (two readers that
    both upgrade to writers would otherwise fail with "database is locked")."""
    url = _with_driver(url)
    if url.get_backend_name() == "postgresql":
        return _postgresql_engine(url, pool_size=10, max_overflow=10)
    if url.get_backend_name() != "sqlite":
        raise ValueError(f"DATABASE_URL must be sqlite:// or postgresql://, not {url.drivername}://")
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False,
                                                "timeout": process_settings().sqlite_busy_timeout},
                           **({"poolclass": StaticPool} if in_memory else {}))
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def at_once_engine_for(url, durable=False):
    """On PostgreSQL, an Engine whose every statement commits by itself: a
    statement that stands alone then costs one round trip instead of three
    (BEGIN, the statement, COMMIT). Unless durable, its COMMIT does not wait
    for the disk (synchronous_commit off). None on SQLite, where a
    transaction costs little more than its statement."""
    url = _with_driver(url)
    if url.get_backend_name() != "postgresql":
        return None
    return _postgresql_engine(url, pool_size=5, max_overflow=10, isolation_level="AUTOCOMMIT",
                              pool_reset_on_return=None,  # nothing to roll back
                              options="" if durable else "-c synchronous_commit=off")


def _with_driver(url):
    url = make_url(url)
    return url.set(drivername="postgresql+psycopg") if url.drivername in ("postgresql", "postgres") else url


def _postgresql_engine(url, options="", **pool):
    settings = process_settings()
    statement_timeout_ms = round(settings.database_statement_timeout * 1000)
    engine = create_engine(url, pool_recycle=1800, pool_timeout=10, **pool,
                           connect_args={"connect_timeout": settings.database_connect_timeout,
                                         "options": f"-c statement_timeout={statement_timeout_ms} {options}".strip()})
    event.listen(engine, "checkout", _ended_by_server)
    event.listen(engine, "do_connect", _connect_through_restart)
    return engine


def _connect_through_restart(dialect, _record, cargs, cparams):
    """A new connection, tried again while the server refuses it or is
    starting (a restart), for DATABASE_CONNECT_TIMEOUT at most: a request
    made during a restart waits for it rather than failing."""
    deadline = time.monotonic() + process_settings().database_connect_timeout
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except psycopg.OperationalError as exc:
            if not _restarting(exc) or time.monotonic() > deadline:
                raise
            time.sleep(RESTART_RETRY_PAUSE)


def _restarting(exc):
    # libpq gives no SQLSTATE for a connection it could not open: its words are all there is.
    return any(words in str(exc) for words in RESTARTING)


def _ended_by_server(dbapi_connection, _record, _proxy):
    """A pooled connection the server ended meanwhile (a restart, a backend
    terminated) is replaced before a request takes it: an idle connection
    is sent nothing, so a readable socket is its "terminating connection"
    or its end. One poll() system call instead of pool_pre_ping's round trip."""
    readable = poll()
    readable.register(dbapi_connection.fileno(), POLLIN)
    if readable.poll(0):
        raise DisconnectionError("the server ended this pooled connection")


def _sqlite_connected(dbapi_connection, _record):
    dbapi_connection.isolation_level = None  # BEGIN is ours (above), not pysqlite's
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    # Turning a new file to WAL needs it alone, and SQLite answers "locked"
    # at once, without waiting, to the others of replicas starting together.
    deadline = time.monotonic() + process_settings().sqlite_busy_timeout
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Database:
    def __init__(self, url):
        self.url = url
        self.engine = engine_for(url)
        self._at_once = at_once_engine_for(url)
        self._durable_at_once = at_once_engine_for(url, durable=True)
        self._local = threading.local()
        migrate(self.engine)

    @property
    def is_postgresql(self):
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self, one_statement=False):
        """The thread's open transaction, or a new one committed at the end
        (rolled back on an exception). Callbacks given to after_commit run
        once it has committed, those given to on_refusal if it is refused.
        one_statement, on PostgreSQL: its statements (Prebuilt, none of them
        read, none reading another's rows) are sent at its end as one
        statement, which commits by itself: one exchange with the server,
        no BEGIN, no COMMIT (OneStatement)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        self._local.after_commit, self._local.on_refusal = [], []
        try:
            with self._begun(one_statement) as conn:
                self._local.conn = conn
                yield conn
        except DBAPIError as error:
            self._local.conn = None  # what explains the refusal reads anew
            for explain in self._local.on_refusal:
                explain(error)
            raise
        finally:
            self._local.conn = None
            callbacks, self._local.after_commit = self._local.after_commit, []
        for callback in callbacks:
            callback()

    @contextmanager
    def _begun(self, one_statement):
        if one_statement and self.is_postgresql:
            statements = OneStatement(self.engine.dialect)
            yield statements
            statements.send(self._durable_at_once)
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def at_once(self):
        """A connection for one statement that stands alone: a read, or a
        write whose loss in a database server crash is harmless (never in
        ours). Inside the thread's open transaction, that transaction's; but
        beside one sent as one statement, where nothing is read."""
        if self._at_once is None or (self.in_transaction() and not isinstance(self._local.conn, OneStatement)):
            with self.transaction() as conn:
                yield conn
            return
        with self._at_once.connect() as conn:
            yield conn

    def in_transaction(self):
        return getattr(self._local, "conn", None) is not None

    def after_commit(self, callback):
        self._local.after_commit.append(callback)

    def on_refusal(self, explain):
        """explain(error) runs, outside the thread's open transaction, if the
        database refuses it (a DBAPIError: in a transaction sent as one
        statement, at its end); it may raise what the refusal means instead."""
        self._local.on_refusal.append(explain)

    def handle_once(self, consumer, message_id, work):
        """Runs work() in a transaction that also records message_id as
        handled by consumer; False, without running it, when some replica
        already did. Retry (the broker delivers the message again) when the
        database could not be reached or gave up on the transaction."""
        try:
            with self.transaction() as conn:
                if conn.execute(select(handled_messages.c.message_id).where(
                        handled_messages.c.consumer == consumer,
                        handled_messages.c.message_id == message_id)).first():
                    return False
                conn.execute(insert(handled_messages).values(
                    consumer=consumer, message_id=message_id, handled_at=time.time()))
                work()
                return True
        except IntegrityError:  # another replica recorded it first and committed meanwhile
            return False
        except DBAPIError as exc:
            raise Retry(f"database: {exc.orig!r}") from exc

    def close(self):
        self.engine.dispose()
        for engine in (self._at_once, self._durable_at_once):
            if engine is not None:
                engine.dispose()


class OneStatement:
    """What a transaction sent as one statement holds until its end: the
    Prebuilt statements run in it, each with its parameters. Sent as one
    statement on PostgreSQL, each a data-modifying CTE of it: all of them
    commit, or none; they see the database as it was before any of them,
    so none may read another's rows. Nothing can be read in it (no execute)."""

    def __init__(self, dialect):
        self.dialect = dialect
        self._parts = []

    def add(self, prebuilt, params):
        self._parts.append((prebuilt, params))

    def send(self, engine):
        if not self._parts:
            return
        statement = Prebuilt.joined(tuple(prebuilt for prebuilt, _ in self._parts))
        params = {f"{name}_{n}": value for n, (_, given) in enumerate(self._parts) for name, value in given.items()}
        connection = engine.raw_connection()  # the pool's own: no Connection around it
        try:
            statement.run_on(self.dialect, connection.driver_connection, params)
        except DBAPIError:
            if connection.driver_connection.closed:  # the server ended the connection: the pool drops it
                connection.invalidate()
            raise
        finally:
            connection.close()


class Prebuilt:
    """A Core statement built and compiled once per dialect, run on the
    driver's own cursor in the thread's transaction: a statement of a hot
    path then costs no statement built, no cache key, no execution context
    or Result around the driver's (about a sixth of conn.execute's Python,
    bench/RESULTS.md). run() takes its bind parameters by name and returns
    the driver's cursor (rows as tuples); in a transaction sent as one
    statement (OneStatement) it is kept for the end, and returns None."""

    _joined = {}  # tuple of Prebuilt -> the one statement of all of them

    def __init__(self, statement):
        self._statement = statement
        self._compiled = {}  # dialect name -> (SQL, parameters' defaults, their order when positional)

    @classmethod
    def joined(cls, prebuilts):
        """One statement of prebuilts, each a data-modifying CTE, whose n-th
        bind parameters are named with _n after their own."""
        joined = cls._joined.get(prebuilts)
        if joined is None:
            parts = [_numbered(prebuilt._statement, n) for n, prebuilt in enumerate(prebuilts)]
            joined = cls._joined[prebuilts] = cls(parts[0] if len(parts) == 1 else select(literal_column("1")).add_cte(
                *(part.cte(f"part_{n}") for n, part in enumerate(parts))))
        return joined

    def run(self, conn, **params):
        if isinstance(conn, OneStatement):
            conn.add(self, params)
            return None
        return self.run_on(conn.dialect, conn.connection.driver_connection, params)

    def run_on(self, dialect, driver_connection, params):
        sql, defaults, order = self._compiled.get(dialect.name) or self._compile(dialect)
        values = {**defaults, **params}
        cursor = driver_connection.cursor()
        with _as_dbapi_errors(dialect, sql):
            cursor.execute(sql, values if order is None else [values[name] for name in order])
        return cursor

    def _compile(self, dialect):
        compiled = self._statement.compile(dialect=dialect)
        self._compiled[dialect.name] = str(compiled), compiled.params, compiled.positiontup
        return self._compiled[dialect.name]


def _numbered(statement, n):
    """statement with each named bind parameter's name followed by _n."""
    def renamed(element):
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(f"{element.key}_{n}", type_=element.type)
        return None
    return visitors.replacement_traverse(statement, {}, renamed)


@contextmanager
def _as_dbapi_errors(dialect, statement):
    """The driver's errors as conn.execute raises them (IntegrityError, OperationalError...)."""
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error) from exc


def migrate(engine):
    """Brings the schema up to the newest migration. On PostgreSQL a lock
    held for the transaction makes replicas starting at once take turns;
    on SQLite, BEGIN IMMEDIATE does the same."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
