"""Where a job's planned exports run: in this process, or as tasks on a Dask cluster.

The coordinator (``pipeline.jobs.runner``) plans, and alone writes the registry and the report.
An executor is given :class:`ExportWork` items (plain picklable data: the source's URL or path,
the document, the options, the archive's final path or URL, never an open connection) and calls
back with one small :class:`Outcome` per item as each completes, in the coordinator's event loop.

- ``local``: in this process with bounded concurrency, reading the job's already open source.
- ``dask``: one task per document on a Dask cluster (a scheduler's address, or a local cluster of
  worker processes started and stopped with the job). Each task reopens the source and the sink by
  URL in its worker; a task whose worker died runs again elsewhere (its partial output was never
  published: sinks publish atomically on commit).

``distributed`` is an optional dependency (``pip install 'pipeline[dask]'``), imported only when a
Dask executor starts.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from pipeline.errors import PipelineError, UsageError
from pipeline.export import ExportResult, export_document
from pipeline.jobs.progress import human_size
from pipeline.logcontext import where
from pipeline.model import Document
from pipeline.options import ExportOptions
from pipeline.sources import Source, open_source

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("pipeline")

#: how often a lost worker's task is run again before the document is reported as failed
DEFAULT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ExportWork:
    """One document's export, as data a worker in another process (or machine) can act on."""

    key: int  #: the coordinator's index of the task
    source: str  #: reopened with ``open_source`` (absolute path or URL)
    source_options: dict[str, Any]  #: and these options (``images``: a zip extracts them only then)
    document: Document
    options: ExportOptions
    target: str  #: the archive's final path or URL
    now: datetime
    fingerprint: str
    scratch: str | None = None  #: temporary files' folder (None: the system's)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one :class:`ExportWork`: where it was published, or why it failed."""

    key: int
    location: str = ""
    size: int = 0
    sha256: str = ""
    parts: int = 0
    #: images left out with ``on_error = "skip"``
    skipped_images: list[dict[str, Any]] = field(default_factory=list)
    #: the export's warning log lines (a worker's logs are not the coordinator's)
    warnings: tuple[str, ...] = ()
    #: one line for a user error; None on success
    error: str | None = None
    #: the traceback of a bug (an error outside PipelineError), else None
    detail: str | None = None
    #: ``host:pid`` of the process that ran it
    ran_on: str = ""
    #: the destination's own checksum (an S3 ETag), if it keeps one
    etag: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Done = Callable[[ExportWork, Outcome], None]
Started = Callable[[Sequence[ExportWork]], None]


class Executor(Protocol):
    """Runs a job's document exports; a (sync) context manager that owns its resources."""

    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    async def run(self, works: Sequence[ExportWork], started: Started, done: Done) -> None:
        """Run every item; ``started(works)`` before they are handed over (all at once to a
        cluster, one by one in process), ``done(work, outcome)`` as each completes (both in the
        caller's event loop). A failed item never stops the others."""
        ...


# --- the work itself, in whatever process runs it ------------------------------------------------


class _Warnings(logging.Handler):
    """Collects the ``pipeline`` logger's warnings of one export in a worker, each naming where
    it arose as the coordinator's own log lines do."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        context = where.get()
        self.lines.append(f"{context}: {record.getMessage()}" if context else record.getMessage())


@contextmanager
def _collecting(collect: bool) -> Iterator[list[str]]:
    """The export's warnings, when it runs in another process than the coordinator's (whose
    logger shows its own as they come)."""
    handler = _Warnings()
    if collect:
        log.addHandler(handler)
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)


async def export_work(work: ExportWork, source: Source | None = None) -> Outcome:
    """Export one document, opening its source by URL unless ``source`` (already open) is given.
    Never raises for a failed export: the outcome says why, a bug with its traceback."""
    here = f"{socket.gethostname()}:{os.getpid()}"
    with _collecting(source is None) as warnings:
        try:
            if source is None:
                with open_source(work.source, **work.source_options) as opened:
                    result = await _export(work, opened)
            else:
                result = await _export(work, source)
        except PipelineError as exc:
            return Outcome(work.key, error=str(exc), warnings=tuple(warnings), ran_on=here)
        except Exception as exc:  # a bug: reported with its traceback, the others go on
            text = "".join(traceback.format_exception(exc))
            return Outcome(work.key, error=f"{type(exc).__name__}: {exc}", detail=text,
                           warnings=tuple(warnings), ran_on=here)
    return Outcome(work.key, result.location, result.size, result.sha256, result.parts,
                   list(result.report), tuple(warnings), ran_on=here, etag=result.etag)


async def _export(work: ExportWork, source: Source) -> ExportResult:
    scratch = Path(work.scratch) if work.scratch else None
    return await export_document(source, work.document, work.options, work.target, now=work.now,
                                 fingerprint=work.fingerprint, scratch=scratch)


def run_work(work: ExportWork) -> Outcome:
    """The Dask task: one document exported in the worker, its source and sink opened there."""
    return anyio.run(export_work, work)


def round_trip() -> int:
    """An empty task (the benchmark's per-task overhead)."""
    return 0


# --- executors ---------------------------------------------------------------------------------


class LocalExecutor:
    """In this process, ``concurrency`` exports at a time, all reading the job's open source."""

    name = "local"

    def __init__(self, source: Source, concurrency: int) -> None:
        self.source, self.concurrency = source, concurrency

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def run(self, works: Sequence[ExportWork], started: Started, done: Done) -> None:
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def one(work: ExportWork) -> None:
            async with limiter:
                started((work,))
                outcome = await export_work(work, self.source)
            done(work, outcome)

        async with anyio.create_task_group() as tg:
            for work in works:
                tg.start_soon(one, work)


class DaskExecutor:
    """One task per document on a Dask cluster: the scheduler at ``scheduler``, or a local cluster
    of ``workers`` processes (one thread each, ``memory_limit`` each) for the job's duration.

    A task whose worker dies (killed, out of memory) is run again on another worker, up to
    ``retries`` times for a local cluster (a remote scheduler's ``allowed-failures`` decides
    there); after that the document is reported as failed, and the others go on.
    """

    name = "dask"

    def __init__(
        self, *, scheduler: str | None = None, workers: int | None = None, memory_limit: str | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self.scheduler, self.memory_limit, self.retries = scheduler, memory_limit, retries
        self.workers = workers or _cores()
        self._client: Client | None = None
        self._cluster: Any = None
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "use the executor as a context manager"
        return self._client

    def start_in_background(self) -> None:
        """Start connecting (or the local cluster's workers) in a thread, so that it overlaps with
        the job's planning; ``run`` waits for it. The executor must still be exited."""
        self._starting = threading.Thread(target=self._start_safely, name="dask-executor-start", daemon=True)
        self._starting.start()

    def _start_safely(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # re-raised by _wait_started in the job's thread
            self._start_error = exc

    def _wait_started(self) -> None:
        if self._starting is None:
            self._start()
            return
        self._starting.join()
        if self._start_error is not None:
            raise self._start_error

    def __enter__(self) -> DaskExecutor:
        self._wait_started()
        return self

    def _start(self) -> None:
        if self.scheduler is None:  # its workers' parent starts importing now, on another core
            _start_forkserver()
        distributed = _distributed()
        import dask

        try:
            if self.scheduler is not None:
                self._client = distributed.Client(self.scheduler, timeout="10s")
            else:
                settings = {"distributed.scheduler.allowed-failures": self.retries,
                            "distributed.worker.multiprocessing-method": "forkserver"}
                with dask.config.set(settings):
                    self._cluster = distributed.LocalCluster(
                        n_workers=self.workers, processes=True, threads_per_worker=1,
                        memory_limit=self.memory_limit or "auto", dashboard_address=":0",
                        silence_logs=logging.ERROR, preload=[__name__], env=worker_env(self.workers),
                    )
                self._client = distributed.Client(self._cluster)
        except (OSError, TimeoutError) as exc:
            self._close()
            where = f"the Dask scheduler at {self.scheduler}" if self.scheduler else "a local Dask cluster"
            raise PipelineError(f"cannot reach {where}: {exc}") from None
        workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
        limits = sorted({human_size(w.get("memory_limit") or 0) for w in workers})
        log.info("executor dask: %s, %d workers, memory limit %s each", self.scheduler or "local cluster",
                 len(workers), " / ".join(limits) or "none")

    def __exit__(self, *exc: object) -> None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    async def run(self, works: Sequence[ExportWork], started: Started, done: Done) -> None:
        """Submit every item, then report completions as they come, from a thread that waits on
        the cluster (the Dask client runs its own event loop)."""
        await anyio.to_thread.run_sync(self._wait_started)
        if not works:
            return
        started(works)
        await anyio.to_thread.run_sync(self._collect, works, _loop_caller(done))

    def _collect(self, works: Sequence[ExportWork], done: Callable[[ExportWork, Outcome], None]) -> None:
        from distributed import as_completed

        client = self.client
        keys = [f"export-{work.key}-{uuid.uuid4().hex}" for work in works]  # never a cached result
        futures = client.map(run_work, works, key=keys, pure=False, retries=self.retries)  # one message
        by_key = dict(zip(keys, works, strict=True))
        for future in as_completed(futures):
            work = by_key[future.key]
            try:
                outcome = future.result()
            except Exception as exc:  # lost workers beyond the retries, or an unpicklable result
                outcome = Outcome(work.key, error=self._task_error(exc))
            finally:
                future.release()
            done(work, outcome)

    def _task_error(self, exc: BaseException) -> str:
        name = type(exc).__name__
        if name == "KilledWorker":
            return f"the workers running it died {self.retries + 1} times (out of memory?): {exc}"
        return f"{name}: {exc}"


def _loop_caller(done: Done) -> Callable[[ExportWork, Outcome], None]:
    """``done`` called in the coordinator's event loop from the thread that waits on Dask."""

    def call(work: ExportWork, outcome: Outcome) -> None:
        anyio.from_thread.run_sync(done, work, outcome)

    return call


#: what a worker imports before its first task: Dask, this module (and through it the export and
#: every format's writer), and the corpus reader
WORKER_MODULES = ("distributed", __name__, "pipeline.sources.sqlite")


def _start_forkserver() -> None:
    """Start the process the local cluster's workers will be forked from, importing
    :data:`WORKER_MODULES` once, before this process imports Dask: its imports then run on
    another core while this one imports Dask and plans the job, and each worker is forked ready
    rather than importing them after its own interpreter starts (spawn, Dask's default). The
    server has no threads when it forks (libvips, which is not in it, would start some)."""
    import multiprocessing
    import multiprocessing.forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_MODULES))
    multiprocessing.forkserver.ensure_running()


def worker_env(workers: int) -> dict[str, str]:
    """libvips' threads per worker: the cores shared between the workers (libvips takes every
    core in each process by default, so two workers ran twice as many threads as cores), unless
    VIPS_CONCURRENCY is set already."""
    if "VIPS_CONCURRENCY" in os.environ:
        return {}
    return {"VIPS_CONCURRENCY": str(max(1, _cores() // workers))}


def dask_setup(worker: object) -> None:
    """Dask's preload hook (``dask worker --preload pipeline.jobs.executors``): a standing
    cluster's workers import what a task needs when they start, not in their first task."""
    for module in WORKER_MODULES[1:]:
        importlib.import_module(module)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError("executor dask needs Dask distributed: pip install 'pipeline[dask]'") from None
    return distributed


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_executor(
    kind: Literal["local", "dask"], *, source: Source, concurrency: int, scheduler: str | None = None,
    workers: int | None = None, memory_limit: str | None = None, retries: int = DEFAULT_RETRIES,
) -> Executor:
    """The executor a job's ``[executor]`` table asks for."""
    if kind == "local":
        return LocalExecutor(source, concurrency)
    return DaskExecutor(scheduler=scheduler, workers=workers, memory_limit=memory_limit, retries=retries)


@contextmanager
def early_executor(
    kind: Literal["local", "dask"], *, scheduler: str | None = None, workers: int | None = None,
    memory_limit: str | None = None, retries: int = DEFAULT_RETRIES,
) -> Iterator[DaskExecutor | None]:
    """A Dask executor already starting (in a thread) while the block plans the job, stopped when
    the block ends; None for the local executor, which needs nothing started."""
    if kind == "local":
        yield None
        return
    executor = DaskExecutor(scheduler=scheduler, workers=workers, memory_limit=memory_limit, retries=retries)
    executor.start_in_background()
    try:
        yield executor
    finally:
        executor.__exit__()


__all__ = ["DaskExecutor", "Executor", "ExportWork", "LocalExecutor", "Outcome", "early_executor",
           "export_work", "make_executor", "run_work", "worker_env"]
