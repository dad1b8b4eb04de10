"""The run store object: one database (and its results directory), opened and checked.

:func:`open_store` is the way in. Opening checks the store before anything
is written (not a database, a newer schema: :class:`~iterflow.errors.StoreError`
naming the file or URL) and creates or upgrades the schema
(:mod:`iterflow.store.schema`). The store then hands out a sink for a run
(:meth:`RunStore.sink`), answers queries (:class:`~iterflow.store.queries.StoreReaders`),
and tells a resumed run where to start (:meth:`RunStore.resume_point`).
:func:`using_store` gives the module-level functions of ``iterflow.store``
an open store from whatever they were given.

>>> store = open_store("sqlite:///runs.db")            # doctest: +SKIP
>>> sink = store.sink()                                 # give it to the runner
>>> store.list_runs(limit=5)                            # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from iterflow.errors import RunNotResumable, StoreError
from iterflow.events import ResumePoint
from iterflow.store import db, statements, writer_connections
from iterflow.store.liveness import HOST, LIVE, driving, run_info
from iterflow.store.lookup import find_run, load_state_results
from iterflow.store.migrations import MIGRATIONS, Migration, prepare
from iterflow.store.queries import StoreReaders
from iterflow.store.resume import build_resume_point, changed_tasks
from iterflow.store.schema import check_sqlite_file, flow_runs
from iterflow.store.writer import StoreSink

if TYPE_CHECKING:
    from iterflow.store.records import RunInfo

__all__ = [
    "CheckpointSource",
    "RunStore",
    "close_checkpoint_stores",
    "default_home",
    "default_url",
    "open_store",
    "using_store",
]

T = TypeVar("T")

_RESUMABLE = frozenset({"Failed", "Cancelled", "Crashed"})


def default_home() -> Path:
    """``$ITERFLOW_HOME``, or ``~/.iterflow``."""
    return Path(os.environ.get("ITERFLOW_HOME") or "~/.iterflow").expanduser()


def default_url() -> str:
    """``$ITERFLOW_STORE_URL``, or the SQLite file ``$ITERFLOW_HOME/iterflow.db``.

    Creates ``$ITERFLOW_HOME`` when the default file is used.
    """
    url = os.environ.get("ITERFLOW_STORE_URL")
    if url:
        return url
    home = default_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the iterflow home directory {home} ({exc}). Set ITERFLOW_HOME "
            f"to a writable directory, or ITERFLOW_STORE_URL to a store."
        ) from exc
    return f"sqlite:///{home.resolve() / 'iterflow.db'}"


def open_store(url: str | None = None, **options: Any) -> RunStore:
    """Open (creating if needed) the run store at ``url``; see :class:`RunStore`.

    With no ``url``: ``$ITERFLOW_STORE_URL``, else ``sqlite:///$ITERFLOW_HOME/iterflow.db``.
    ``read_only=True`` opens it for reading only, ``None`` does so when it cannot
    be written here (see :mod:`iterflow.store.db`).
    """
    return RunStore(url or default_url(), **options)


def heartbeat_interval() -> float:
    """Seconds between a driving process's heartbeats: ``$ITERFLOW_HEARTBEAT``, else 5."""
    given = os.environ.get("ITERFLOW_HEARTBEAT", "").strip()
    if not given:
        return 5.0
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise StoreError(
            f"ITERFLOW_HEARTBEAT={given!r} is not a number of seconds above 0; set it to "
            f"e.g. 5 (the default), or unset it."
        )
    return seconds


@contextlib.contextmanager
def using_store(store: RunStore | str | None) -> Iterator[RunStore]:
    """``store`` as an open :class:`RunStore`: itself, or one opened (and closed after).

    ``None`` is the default store (see :func:`open_store`), a string its URL.
    """
    if isinstance(store, RunStore):
        yield store
        return
    opened = open_store(store)
    try:
        yield opened
    finally:
        opened.close()


class RunStore(StoreReaders):
    """An open run store: a database reached through SQLAlchemy, and a results directory.

    ``lock_timeout`` is how long a write may wait for a locked database before
    failing; ``stale_after`` how old a heartbeat may be before a live-looking
    run counts as ``Crashed``. ``home`` holds ``results/`` (large results).
    A store is safe to share between threads; open one per process. Its
    questions (``list_runs``, ``task_runs``, ``iterations``, ...) come from
    :class:`~iterflow.store.queries.StoreReaders`.

    ``read_only``: False (the default) opens the store to record runs, and
    refuses a SQLite store this process cannot write, naming it; True opens
    it for queries only (no schema upgrade, no sink); None picks True exactly
    when the SQLite file or its directory cannot be written here.
    """

    def __init__(
        self,
        url: str,
        *,
        home: str | os.PathLike[str] | None = None,
        lock_timeout: float = 30.0,
        stale_after: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
        read_only: bool | None = False,
    ) -> None:
        self.url = str(url)
        self.lock_timeout = lock_timeout
        self.stale_after = stale_after
        self.home = Path(home) if home is not None else default_home()
        self.results_dir = self.home / "results"
        try:
            path = db.sqlite_path(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(
                f"{self.url!r} is not a valid store URL ({exc}). Use a SQLAlchemy URL such as "
                f"sqlite:///path/to/iterflow.db or postgresql+psycopg://user@host/db."
            ) from exc
        #: How messages name this store: the file for SQLite, else the URL sans password.
        self.name = (
            str(Path(path).expanduser().resolve()) if path else db.display_url(self.url)
        )
        if path and read_only is None:
            read_only = not db.sqlite_writable(path)
        #: True when opened for queries only (see the class docstring).
        self.read_only = bool(read_only)
        engine_url = self.url
        if path:
            check_sqlite_file(path)
            if not self.read_only:
                db.check_writable(path, self.name)
            elif not Path(path).expanduser().exists():
                raise StoreError(
                    f"There is no run store at {self.name}, and it cannot be created there "
                    f"(read-only). Set ITERFLOW_HOME or ITERFLOW_STORE_URL to a store."
                )
            else:
                engine_url = db.read_only_url(path)
        try:
            self.engine = db.create_engine(engine_url, lock_timeout=lock_timeout)
        except StoreError:
            raise
        except Exception as exc:  # a missing driver, a bad option
            raise StoreError(f"Cannot open the run store {self.name}: {exc}") from exc
        try:
            self.schema_version = prepare(
                self.engine, self.name, migrations=migrations, lock_timeout=lock_timeout,
                read_only=self.read_only,
            )
        except BaseException:
            self.engine.dispose()
            raise
        # Connections writers keep for their whole life come from here, not from the
        # pool that queries share (a process running many flows would drain it).
        self._writer_engine: sa.Engine | None = None
        self._writer_lock = threading.Lock()
        # Run id -> (the owner token a claim replaced, the claim's token).
        self._claims: dict[str, tuple[str | None, str]] = {}

    # -- plumbing used by the writer and the queries --------------------------
    def write(
        self, fn: Callable[[sa.Connection], T], *, connection: sa.Connection | None = None
    ) -> T:
        """Run ``fn(conn)`` in one write transaction (retried while locked).

        ``connection``: one from :meth:`write_connection`, kept by the caller.
        """
        return db.write(
            self.engine, fn, name=self.name, lock_timeout=self.lock_timeout,
            connection=connection,
        )

    def run_results_dir(self, run_id: str) -> Path:
        """Where a run's results too big for the database are written."""
        # Run ids are the runner's hex strings; keep a stray separator from escaping.
        return self.results_dir / run_id.replace(os.sep, "_").replace("/", "_")

    def write_connection(self) -> sa.Connection:
        """A connection of its own for many :meth:`write` calls (the caller closes it).

        It does not come from the pool that queries and other writes share. On
        SQLite it may be one an earlier writer on the same file gave back
        (:mod:`iterflow.store.writer_connections`), with its statements compiled.
        """
        kept = writer_connections.take(self)
        if kept is not None:
            return kept
        with self._writer_lock:
            if self._writer_engine is None:
                self._writer_engine = db.create_engine(
                    self.url, lock_timeout=self.lock_timeout, pooled=False
                )
        return db.write_connection(self._writer_engine)

    def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction."""
        return db.read(self.engine, fn, name=self.name)

    # -- recording ----------------------------------------------------------------
    def sink(self, **options: Any) -> StoreSink:
        """A new :class:`~iterflow.store.writer.StoreSink` writing to this store.

        ``options`` go to the sink: ``batch_interval``, ``batch_size``,
        ``max_pending``, ``max_batch``, ``opening_batch``, ``heartbeat_interval``, ``owner``,
        ``identities``, ``forget``, ``previews_only`` (slugs of tasks with
        ``checkpoint=False``). ``heartbeat_interval`` defaults to
        ``$ITERFLOW_HEARTBEAT`` seconds, else 5 (the heartbeat also reads the
        run's cancel requests: ``iterflow cancel`` takes up to two of them).
        """
        if self.read_only:
            raise StoreError(db.read_only_message(self.name))
        if "heartbeat_interval" not in options:
            options["heartbeat_interval"] = heartbeat_interval()
        return StoreSink(self, **options)

    def checkpoint_source(self) -> CheckpointSource:
        """A picklable reader of loop checkpoints, for jobs in other processes."""
        return CheckpointSource(self.url)

    # -- resuming -------------------------------------------------------------------
    def resume_point(
        self, run_id: str, *, identities: dict[str, str] | None = None
    ) -> ResumePoint:
        """What a resumed run already has: see :class:`~iterflow.events.ResumePoint`.

        ``finished`` holds the task runs that ended well (Success, Cached,
        Skipped), with their results loaded, and a ``Mapped`` parent when it was
        recorded and all its children are among them. ``loops`` holds, for each
        other task run that recorded a ``Looped`` state, ``(i + 1, result)`` for
        its latest ``Looped`` iteration ``i``.

        Task runs inside loop blocks (ids ``<block task run id>/<k>/<slug>``) go
        to ``iterations``, keyed by that prefix, for the one iteration each
        unfinished block continues at (``k`` = its next loop index), nested
        blocks included; finished iterations are left out, so a resume loads
        only what it uses. It does not check that the run may be resumed: see
        :meth:`check_resumable`.

        ``identities`` (task slug -> identity, :func:`iterflow.core.fingerprint.task_identities`
        of the flow that resumes): task runs recorded for another identity are
        left out, so they run again (see :meth:`changed_tasks`).
        """
        return self.read(lambda conn: build_resume_point(conn, run_id, self.name, identities))

    def changed_tasks(self, run_id: str, identities: dict[str, str]) -> list[str]:
        """Slugs of the run's recorded tasks that are not the same call in the resuming flow.

        A resume runs them again; give them to the run's sink (``forget=``) so
        their old summaries are cleared when the resumed run starts.
        """
        return self.read(lambda conn: changed_tasks(conn, run_id, self.name, identities))

    def check_resumable(
        self,
        run_id: str,
        *,
        claim: bool = False,
        flow_name: str | None = None,
        owner: str | None = None,
        force: bool = False,
        finished_ok: bool = False,
    ) -> RunInfo:
        """Raise :class:`RunNotResumable` unless the run is Failed, Cancelled or Crashed.

        ``finished_ok=True`` also accepts a run that finished (a rewind to an
        earlier iteration: ``iterflow resume RUN --from-iteration K``); a live
        run is refused all the same.

        A live run is refused so that two processes never drive one run (on
        this host a run whose process is alive is live, however old its
        heartbeat). ``flow_name``: the flow that would resume it; a run of
        another flow is refused (its results are not that flow's). A refused
        run is left as it was.

        With ``claim=True`` the check and taking the run over (state
        ``Running``, this process's pid and host, a fresh heartbeat, and
        ``owner``, the token of the sink that will record it) happen in one
        write transaction, so of two processes resuming at once only one
        succeeds. The process that drove the run before finds its token gone
        at its next write and stops (:class:`~iterflow.errors.RunTakenOver`).
        ``force=True`` claims a run that looks live, for a user who knows
        its process will not go on (a process stopped for good, say).

        >>> info = store.check_resumable(run_id, claim=True)   # doctest: +SKIP
        """

        token = owner or uuid.uuid4().hex

        def check(conn: sa.Connection) -> RunInfo:
            row = find_run(conn, run_id, self.name, error=RunNotResumable, for_update=claim)
            info = run_info(row, self.stale_after)
            if flow_name is not None and info.flow_name != flow_name:
                raise RunNotResumable(
                    f"Run {info.run_id} is a run of flow {info.flow_name!r}, not of flow "
                    f"{flow_name!r}: a run resumes only with the flow it started with. Resume "
                    f"it with flow {info.flow_name!r}, or start a new run of {flow_name!r}."
                )
            live = force and info.state in LIVE
            if info.state not in _RESUMABLE and not live and not (
                finished_ok and info.state not in LIVE
            ):
                raise RunNotResumable(_refusal(info))
            if claim:
                self._claims[info.run_id] = (row.owner, token)
                conn.execute(
                    sa.update(flow_runs)
                    .where(flow_runs.c.run_id == info.run_id)
                    .values(
                        state="Running", ended=None, pid=os.getpid(),
                        host=HOST, heartbeat=time.time(), owner=token,
                    )
                )
            return info

        if not claim:
            return self.read(check)
        info = self.write(check)
        driving(info.run_id, token, True)  # until its sink ends the run, or release()
        return info

    def release(self, claimed: RunInfo) -> None:
        """Undo :meth:`check_resumable` ``(claim=True)`` for a resume that did not start.

        ``claimed`` is what the claim returned. The run gets back its recorded
        state, pid, host, heartbeat and owner, so it stays resumable (by this
        process too); a run some other process has taken since is left alone.
        """
        owner, token = self._claims.pop(claimed.run_id, (None, None))
        if token is not None:
            driving(claimed.run_id, token, False)

        def undo(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(flow_runs)
                .where(
                    flow_runs.c.run_id == claimed.run_id,
                    flow_runs.c.state == "Running",
                    flow_runs.c.pid == os.getpid(),
                    flow_runs.c.host == HOST,
                )
                .values(
                    state=claimed.recorded_state, ended=claimed.ended, pid=claimed.pid,
                    host=claimed.host, heartbeat=claimed.heartbeat, owner=owner,
                )
            )

        self.write(undo)

    def last_loop(self, task_run_id: str) -> tuple[int, Any] | None:
        """``(next_loop_index, loop_result)`` from the task run's latest recorded ``Looped``.

        ``task_run_id`` is the task run's full id, as recorded in ``task_runs``:
        ``<run id>/<slug>`` (``/<map_index>`` for a mapped child) at the top
        level, ``<block task run id>/<k>/<slug>`` (or ``.../<k>/attemptN/<slug>``)
        inside a loop block, so it names one iteration's task run. ``None``
        when it recorded none (start at iteration 0). Used by a job that was
        rescheduled after its worker died, to continue the loop.

        Every job on a remote executor asks before it starts, almost always to
        hear "none", so the question goes straight to the DB-API cursor.
        """

        def query(conn: sa.Connection) -> tuple[int, Any] | None:
            row = statements.last_looped.first(conn, (task_run_id,))
            if row is None:
                return None
            looped_index, looped_transition = row
            if looped_transition is None:
                return looped_index + 1, None
            loaded = load_state_results(conn, [looped_transition])
            return looped_index + 1, loaded[looped_transition]

        return self.read(query)

    # -- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Release the database connections (sinks must be closed first)."""
        self.engine.dispose()
        if self._writer_engine is not None:
            self._writer_engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({self.name!r})"


def _refusal(info: RunInfo) -> str:
    who = f"flow {info.flow_name!r}"
    if info.state in LIVE:
        age = ""
        if info.heartbeat is not None:
            age = f", last heartbeat {time.time() - info.heartbeat:.0f} s ago"
        return (
            f"Run {info.run_id} of {who} is still running (process {info.pid} on "
            f"{info.host}{age}); two processes must not drive one run. Wait for it to "
            f"finish, or stop it (Ctrl-C or SIGTERM record it as Cancelled), then resume. "
            f"A process that is stopped (Ctrl-Z, SIGSTOP) counts as alive: if you know it "
            f"will not go on, `iterflow resume {info.run_id[:8]} --force` takes the run "
            f"over, and that process stops at its next write."
        )
    if info.state in ("Success", "Skipped"):
        return (
            f"Run {info.run_id} of {who} already finished successfully; there is nothing "
            f"to resume. Start a new run instead."
        )
    return (
        f"Run {info.run_id} of {who} is {info.state}; only Failed, Cancelled or Crashed "
        f"runs can be resumed."
    )


# One store per URL per process for CheckpointSource: a rescheduled job may ask
# often, and opening a store costs a schema check.
_SOURCES: dict[str, tuple[int, RunStore]] = {}
_SOURCES_LOCK = threading.Lock()


@atexit.register
def close_checkpoint_stores() -> None:
    """Close the stores :class:`CheckpointSource` opened in this process."""
    with _SOURCES_LOCK:
        for pid, store in _SOURCES.values():
            if pid == os.getpid():
                store.close()
        _SOURCES.clear()


class CheckpointSource:
    """Reads loop checkpoints from the store at ``url``, from any process.

    It pickles as its URL alone, so it can travel to a Dask worker; the store
    is opened there on first use and kept for the life of the process.

    >>> source = CheckpointSource("sqlite:////tmp/iterflow.db")   # doctest: +SKIP
    >>> source.last_loop(f"{flow_run_id}/accumulate-1")           # doctest: +SKIP
    (4, 10)
    """

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def last_loop(self, task_run_id: str) -> tuple[int, Any] | None:
        """See :meth:`RunStore.last_loop`."""
        return self._store().last_loop(task_run_id)

    def _store(self) -> RunStore:
        pid = os.getpid()
        with _SOURCES_LOCK:
            cached = _SOURCES.get(self.url)
            # A forked child must not share its parent's connections.
            if cached is None or cached[0] != pid:
                cached = (pid, RunStore(self.url))
                _SOURCES[self.url] = cached
            return cached[1]

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckpointSource, (self.url,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckpointSource) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __repr__(self) -> str:
        return f"CheckpointSource({db.display_url(self.url)!r})"
