"""The ``pipeline`` command: thin argument parsing over the same functions jobs call.

User errors print one line on stderr and exit 2 (usage, configuration) or 1 (runtime);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import PipelineError, SourceError, UsageError
from .logcontext import configure_logging
from .memory import bound_heap
from .ocrmodel import JOBS as JOB_NAMES

if TYPE_CHECKING:
    from .options import ExportOptions
    from .registry import Registry
    from .sources import Source

#: namespace prefix of the option-model flags (``opt:image.quality``)
OPTION = "opt:"

log = logging.getLogger("pipeline")


# --- commands -----------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import build_demo, parse_image_size

    options = dict(documents=args.documents, parts=args.parts, lines=args.lines, seed=args.seed,
                   image_size=parse_image_size(args.image_size), image_format=args.image_format)
    if "://" in args.corpus:
        from .pgdemo import build_postgres_demo
        from .sources.postgres import redact

        if args.media_root is None:
            raise UsageError("a postgresql:// demo needs --media-root DIR (where its images go)")
        summary = build_postgres_demo(args.corpus, media_root=args.media_root, **options)
        print(f"{redact(args.corpus)}: {len(summary.document_ids)} documents, {summary.parts} parts, "
              f"{summary.lines} lines; images in {summary.media_root}")
        return 0
    if args.media_root is not None:
        raise UsageError("--media-root goes with a postgresql:// database (a corpus file keeps its own)")
    print(build_demo(args.corpus, **options))
    return 0


def _run_async(run: Callable[[], Awaitable[int]]) -> int:
    """``run()`` in an event loop: anyio (and asyncio) load only for the commands that need them."""
    import anyio

    return anyio.run(run)


def cmd_export(args: argparse.Namespace) -> int:
    import dataclasses

    from .export import export_document
    from .options import parse_pages
    from .registry import Registry
    from .sinks import local_folder

    options = _export_options(args)

    async def run() -> int:
        with _export_source(args) as source:
            where = args.registry or source.default_registry()
            try:
                document = await source.document(args.document)
                part_ids = await source.part_ids(document, parse_pages(args.parts)) if args.parts else None
            except SourceError as exc:  # the source failed before the export could start: record it
                if where:
                    _record_failure(Registry(where), args, exc)
                raise
            result = await export_document(
                source, document, dataclasses.replace(options, part_ids=part_ids), args.output,
                registry=Registry(where) if where else None, scratch=_scratch(args.output, local_folder),
            )
        if result.location != "-":
            print(result.location)
        log.info("export %s: %d parts, %d bytes, sha256 %s", result.id, result.parts, result.size,
                 result.sha256)
        for entry in result.report:
            if "model" in entry:
                print(f"pipeline: skipped {entry['error']}", file=sys.stderr)
                continue
            print(f"pipeline: skipped image of page {entry['page']} ({entry['file']}): {entry['error']}",
                  file=sys.stderr)
        if result.summary:
            log.info("%s", result.summary)
        return 1 if result.report else 0

    return _run_async(run)


def _record_failure(registry: Registry, args: argparse.Namespace, error: Exception) -> None:
    """A ``failed`` registry entry for an export whose source could not be read at all."""
    from .registry import new_export_id

    export_id, ref = new_export_id(), str(args.document)
    registry.start(export_id, document_id=int(ref) if ref.isdigit() else None, document_name=ref,
                   format=getattr(args, OPTION + "format", None) or "alto",
                   layer=getattr(args, OPTION + "layer", None), options={}, path=args.output or ".")
    registry.fail(export_id, str(error))


def _export_options(args: argparse.Namespace) -> ExportOptions:
    """The option model from the flags given (the others keep the model's defaults)."""
    from .options import ExportOptions, build

    given = {tuple(key.removeprefix(OPTION).split(".")): value for key, value in vars(args).items()
             if key.startswith(OPTION)}
    return build(ExportOptions, given)


def _scratch(output: str | None, local_folder: Callable[[str | None], Path | None]) -> Path | None:
    """Temporary files go beside a local output (same file system, not a small /tmp)."""
    if output == "-" or (output and "://" in output):
        return None
    folder = local_folder(output)
    return folder if folder is not None else Path(output or ".").parent


def cmd_run(args: argparse.Namespace) -> int:
    from .jobs import describe_plan, load_config, plan_job, run_job
    from .jobs.executors import early_executor

    config = load_config(args.config, [*args.set, *_executor_overrides(args)])

    async def run() -> int:
        if args.dry_run:
            print("\n".join(describe_plan(await plan_job(config, args.config, estimate=True))))
            return 0
        ex = config.executor  # a Dask cluster starts while the job plans (bulk archives need none)
        kind = ex.kind if config.archive.mode == "document" else "local"
        with early_executor(kind, scheduler=ex.scheduler, workers=ex.workers,
                            memory_limit=ex.memory_limit, retries=ex.retries) as executor:
            plan = await plan_job(config, args.config)
            report, path = await run_job(plan, executor)
        print(f"{len(report.exported)} archives written, {len(report.skipped)} unchanged, "
              f"{len(report.failed)} failed; report: {path}")
        return report.exit_code

    return _run_async(run)


def _executor_overrides(args: argparse.Namespace) -> list[str]:
    """``--executor``, ``--workers``, ``--scheduler`` as ``--set executor.*`` (validated alike);
    ``--workers`` or ``--scheduler`` alone mean ``--executor dask``."""
    sets = [f"executor.workers={args.workers}"] if args.workers is not None else []
    if args.scheduler is not None:
        sets.append(f"executor.scheduler={json.dumps(args.scheduler)}")
    kind = args.executor or ("dask" if sets else None)
    return ([f"executor.kind={json.dumps(kind)}"] if kind else []) + sets


def _export_source(args: argparse.Namespace) -> Source:
    """The corpus (``--corpus`` with ``--document``) or what ``--source`` names, read directly."""
    from .sources import open_source

    if args.source is not None:
        if args.document is not None:
            raise UsageError("--document goes with --corpus; --source is one document already")
        lines = getattr(args, OPTION + "format", None) == "lines"  # line crops are cut from the images
        return open_source(args.source, layer=getattr(args, OPTION + "layer", None),
                           images=getattr(args, OPTION + "images", False) or lines)
    if args.document is None:
        raise UsageError("--corpus needs --document (an id or exact name)")
    return open_source(args.corpus, media_root=args.media_root, registry=args.registry)


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import DEFAULT_MAX_PIXELS, import_paths
    from .safezip import refuse_special
    from .store import Corpus

    for path in args.paths:  # before anything opens them (a FIFO would block) or the corpus exists
        refuse_special(path)

    model_paths = [path for path in args.paths if path.suffix.lower() in MODEL_SUFFIXES]
    if model_paths:
        return _import_models(args, model_paths)
    model_flags = [flag for flag, value in _model_flags(args).items() if value not in (None, (), False)]
    if model_flags:
        raise UsageError(f"--{model_flags[0].replace('_', '-')} goes with a model file (.mlmodel)")
    xml_paths = [path for path in args.paths if not _is_text_archive(path)]
    text_paths = [path for path in args.paths if _is_text_archive(path)]

    async def run() -> int:
        with Corpus.open(args.corpus, create=not args.corpus.exists()) as corpus:
            if xml_paths:
                summary = await import_paths(
                    xml_paths, corpus, document=args.document, layer=args.layer, link=args.link,
                    max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                )
                if str(summary):
                    print(summary)
            for path in text_paths:
                from .store.exchange import import_exchange

                layer = args.layer or "manual"
                print(await import_exchange(path, corpus, document=args.document, layer=layer))
        return 0

    return _run_async(run)


#: files ``pipeline import`` records as OCR models (kraken's CoreML files, as eScriptorium accepts)
MODEL_SUFFIXES = (".mlmodel",)


def _model_flags(args: argparse.Namespace) -> dict[str, object]:
    return {"name": args.model_name, "job": args.job, "accuracy": args.accuracy, "epochs": args.epochs,
            "owner": args.owner, "parent": args.parent, "script": args.script,
            "public": True if args.public else None, "trained_on": tuple(args.trained_on),
            "executed_on": tuple(args.executed_on)}


def _import_models(args: argparse.Namespace, paths: list[Path]) -> int:
    """``pipeline import X.mlmodel``: each file copied under the media root and recorded, with the
    flags' metadata over the sidecar's (``--metadata``, e.g. a ``model.json`` from ``models export``)."""
    from .store import Corpus
    from .store.models import ModelImport, import_model

    if len(paths) != len(args.paths):
        raise UsageError("import model files (.mlmodel) on their own, not with documents")
    if len(paths) > 1 and (args.model_name or args.metadata):
        raise UsageError("--model-name and --metadata describe one model file: import one at a time")
    with Corpus.open(args.corpus, create=not args.corpus.exists()) as corpus:
        for path in paths:
            meta = ModelImport.from_options(path, args.metadata, **_model_flags(args))
            model_id, stored = import_model(corpus, path, meta)
            print(f"model {model_id} {meta.name!r} ({JOB_NAMES[meta.job]}): {corpus.media_root / stored}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    import json

    async def run() -> int:
        from .writers.models import keeper, of_document

        with _model_store(args) as store:
            models = await keeper(store).models()
        if args.document is not None:
            models = of_document(models, args.document)
        if args.json:
            print(json.dumps([m.describe() for m in models], indent=2, ensure_ascii=False))
            return 0
        for m in models:
            parent = f"{m.parent_name!r} ({m.parent_id})" if m.parent_id else "-"
            trained = ", ".join(str(d.document_id) for d in m.trained_on) or "-"
            ran = ", ".join(str(d.document_id) for d in m.executed_on) or "-"
            print(f"{m.id:>5}  {m.name!r}  {m.job_name}  accuracy {m.training_accuracy:.2%}  "
                  f"{m.training_epoch} epochs  {m.file_size:,} bytes  owner {m.owner or '-'}  "
                  f"parent {parent}  trained on {trained}  run on {ran}")
        return 0

    return _run_async(run)


def cmd_models_export(args: argparse.Namespace) -> int:
    from .export import export_models
    from .registry import Registry

    async def run() -> int:
        with _model_store(args) as store:
            refs: list[str] = list(args.model)
            if args.all or args.document is not None:
                from .writers.models import keeper, of_document

                models = await keeper(store).models()
                refs += [str(m.id) for m in (models if args.all else of_document(models, args.document))]
            if not refs:
                raise UsageError("name the models: --model ID|NAME (repeatable), --document or --all")
            where = args.registry or store.default_registry()
            result = await export_models(store, refs, args.output, on_error=args.on_error,
                                         registry=Registry(where) if where else None)
        if result.location != "-":
            print(result.location)
        for entry in result.report:
            print(f"pipeline: skipped {entry['error']}", file=sys.stderr)
        return 1 if result.report else 0

    return _run_async(run)


def _model_store(args: argparse.Namespace) -> Source:
    """The corpus or eScriptorium's database (any source; those without models say so)."""
    from .sources import open_source

    return open_source(args.corpus, media_root=args.media_root, registry=args.registry)


def _is_text_archive(path: Path) -> bool:
    """An exchange archive (``test/`` entries) or a zip of only ``.txt`` files, not ALTO/PAGE."""
    import zipfile

    from .safezip import open_zip
    from .store.exchange import is_exchange_archive

    if path.is_dir() or not zipfile.is_zipfile(path):
        return False
    if is_exchange_archive(path):
        return True
    with open_zip(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    return bool(names) and all(n.lower().endswith(".txt") for n in names)


def cmd_exports_list(args: argparse.Namespace) -> int:
    from .registry import Registry

    for rec in Registry(args.registry).list(limit=args.limit):
        size = f"{rec.size:>12,}" if rec.size is not None else " " * 12
        print(f"{rec.id}  {rec.started_at}  {rec.state:<11}  {rec.format:<8}  {size}  "
              f"doc {rec.document_id} {rec.document_name!r}  {rec.path}")
    return 0


def cmd_exports_show(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from .registry import Registry

    record = Registry(args.registry).get(args.id)
    print(json.dumps(asdict(record) | {"state": record.state}, indent=2, ensure_ascii=False))
    return 0


def _serve_registry(args: argparse.Namespace) -> Path:
    """The registry the service keeps its users and exports in: ``--registry``, else the
    corpus's own (the corpus file), else the user's (``~/.local/share/pipeline``)."""
    from .registry import default_registry
    from .sources import open_source

    if args.registry is not None:
        return Path(args.registry)
    if args.corpus is None:
        raise UsageError("give --registry FILE or --corpus FILE|URL")
    with open_source(args.corpus, media_root=getattr(args, "media_root", None)) as source:
        found = source.default_registry()
    return found or default_registry()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .serve import ServeConfig, create_app

    registry = _serve_registry(args)
    registry.parent.mkdir(parents=True, exist_ok=True)
    if args.max_exports < 1:
        raise UsageError("--max-exports: at least 1")
    config = ServeConfig(
        corpus=args.corpus, registry=registry, data=Path(args.data or registry.with_suffix(".serve")),
        media_root=args.media_root, webhook=args.webhook, limit=args.max_exports,
        secure_cookies=args.secure_cookies, output=args.exports, s3_downloads=args.s3_downloads)
    app = create_app(config)
    log.info("serving %s on http://%s:%d/ (registry %s, exports in %s)", args.corpus, args.host, args.port,
             registry, config.store)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                timeout_graceful_shutdown=10)
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from .serve.accounts import Accounts

    accounts = Accounts(_serve_registry(args))
    if args.users_command == "add":
        print(accounts.add_user(args.name))
    elif args.users_command == "token":
        print(accounts.new_token(args.name))
    elif args.users_command == "revoke":
        print(f"{accounts.revoke(args.name)} token(s) of {args.name} revoked")
    else:
        for user, tokens in accounts.users():
            print(f"{user.name}\t{tokens} token(s)")
    return 0


def cmd_exports_gc(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .sinks import cleanup

    folders = list(args.locations)
    if not folders:
        if args.registry is None:
            raise UsageError("exports gc: give folders or s3:// prefixes, or --registry to clean where "
                             "its exports went")
        seen = {_folder_of(r.path) for r in Registry(args.registry).list() if r.path and r.path != "-"}
        folders = sorted(seen)
    removed = 0
    for folder in folders:
        if "://" not in folder and not Path(folder).is_dir():
            continue
        for item in cleanup(folder, args.older_than):
            print(f"removed {item}")
            removed += 1
    print(f"{removed} left-overs of interrupted exports removed from {len(folders)} location(s)")
    return 0


def _folder_of(location: str) -> str:
    return location.rsplit("/", 1)[0] + "/" if "://" in location else str(Path(location).parent)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` (or a number of seconds) as a timedelta."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    return timedelta(seconds=float(m[1]) * unit)


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_path

    failed = 0
    for archive in args.archives:
        notes: list[str] = []
        problems = verify_path(archive if "://" in archive else Path(archive), notes)
        for note in notes:
            print(f"{archive}: note: {note}")
        for problem in problems:
            print(f"{archive}: {problem}")
        failed += bool(problems)
        if not problems:
            print(f"{archive}: OK")
    return 1 if failed else 0


# --- parser -------------------------------------------------------------------------------

def build_parser(*, options: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without ``options`` the export flags generated from the option
    model are left out (commands other than ``export`` start without importing the model)."""
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Streaming export of transcribed document archives (ALTO, PAGE, METS, text).",
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    add_s3_endpoint(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="build a deterministic synthetic corpus with page images")
    p.add_argument("corpus", help="the SQLite file to create, or postgresql://... (an empty database, "
                   "given eScriptorium's tables)")
    p.add_argument("--media-root", type=Path, metavar="DIR", help="with postgresql://: where the images go")
    p.add_argument("--documents", type=int, default=2)
    p.add_argument("--parts", type=int, default=5, help="parts (pages) per document")
    p.add_argument("--lines", type=int, default=20, help="lines per part")
    p.add_argument("--image-size", default="1240x1754", metavar="WxH")
    p.add_argument("--image-format", default="jpeg", choices=["jpeg", "png", "tiff", "webp"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export one document to ALTO, PAGE, text or an exchange archive")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--corpus", metavar="FILE|URL",
                       help="SQLite corpus file, or eScriptorium's database as postgresql://... "
                       "(with --document)")
    where.add_argument("--source", metavar="PATH",
                       help="convert directly: a folder or zip of ALTO/PAGE (with or without METS), an "
                       "exchange archive, or another corpus")
    p.add_argument("--document", help="document id or exact name (with --corpus)")
    p.add_argument("--parts", help="pages to export, 1-based, e.g. 1-10,15 (default: all)")
    p.add_argument("--media-root", metavar="DIR",
                   help="with postgresql://: eScriptorium's MEDIA_ROOT (where the images are)")
    if options:
        add_option_flags(p)
    p.add_argument("-o", "--output", help="file, directory (default: current) or - for stdout")
    p.add_argument("--registry", type=Path,
                   help="registry file (default: the corpus file; none with a --source that is not a corpus)")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="run the exports a TOML job file describes (see configs/)")
    p.add_argument("config", type=Path, help="job file; its relative paths are relative to its folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimated sizes, write nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. corpus=x.sqlite or archive.keep=3 (paths relative to CWD)")
    p.add_argument("--executor", choices=("local", "dask"),
                   help="where exports run: this process (default) or a Dask cluster ([executor] kind)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="Dask: a local cluster of N worker processes, started and stopped by the job")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask: the scheduler of a running cluster, e.g. tcp://10.0.0.5:8786")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", help="import folders or zips of ALTO/PAGE (+ METS), or exchange archives")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a folder or zip; one document each")
    p.add_argument("--corpus", required=True, type=Path, help="SQLite corpus file (created if missing)")
    p.add_argument("--document", help="document name (default: the folder or zip name)")
    p.add_argument("--layer", help="layer name (default as eScriptorium: METS Import, Default ALTO Import "
                   "or Default PAGE Import)")
    p.add_argument("--link", action="store_true", help="reference the images in place, don't copy them")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images over N pixels, read from the header (default 500 million)")
    m = p.add_argument_group("model files (.mlmodel)")
    m.add_argument("--metadata", type=Path, metavar="JSON",
                   help="the model's description, e.g. the model.json of `models export` (flags win)")
    m.add_argument("--model-name", help="name shown in eScriptorium (default: the file name)")
    m.add_argument("--job", choices=["segmentation", "recognition"], help="what the model does")
    m.add_argument("--accuracy", type=float, metavar="0-1", help="training accuracy")
    m.add_argument("--epochs", type=int, metavar="N", help="training epochs completed")
    m.add_argument("--owner", metavar="USER", help="owner's user name")
    m.add_argument("--parent", metavar="ID|NAME", help="the model it was fine-tuned from")
    m.add_argument("--script", metavar="NAME", help="script it reads, e.g. Latin")
    m.add_argument("--public", action="store_true", help="visible to every user")
    m.add_argument("--trained-on", action="append", default=[], metavar="DOCUMENT",
                   help="a document (id or name) it was trained on; repeatable")
    m.add_argument("--executed-on", action="append", default=[], metavar="DOCUMENT",
                   help="a document (id or name) it was run on; repeatable")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("models", help="list or export the OCR models (kraken segmentation/recognition)")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="models by id: job, accuracy, epochs, size, owner, parent, documents")
    q.add_argument("--corpus", required=True, metavar="FILE|URL",
                   help="SQLite corpus file, or eScriptorium's database as postgresql://...")
    q.add_argument("--media-root", metavar="DIR", help="with postgresql://: eScriptorium's MEDIA_ROOT")
    q.add_argument("--registry", type=Path, help="with postgresql://: where image sizes are cached")
    q.add_argument("--document", metavar="ID|NAME", help="only models trained on or run on this document")
    q.add_argument("--json", action="store_true", help="everything about each model, as JSON")
    q.set_defaults(func=cmd_models_list)
    q = msub.add_parser("export", help="a zip of model files, byte for byte, each with its model.json")
    q.add_argument("--corpus", required=True, metavar="FILE|URL",
                   help="SQLite corpus file, or eScriptorium's database as postgresql://...")
    q.add_argument("--media-root", metavar="DIR", help="with postgresql://: eScriptorium's MEDIA_ROOT")
    q.add_argument("--model", action="append", default=[], metavar="ID|NAME",
                   help="a model by id or exact name (repeatable)")
    q.add_argument("--document", metavar="ID|NAME", help="the models trained on or run on this document")
    q.add_argument("--all", action="store_true", help="every model")
    q.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a missing model file fails the export (default) or is left out and reported "
                   "(exit 1)")
    q.add_argument("-o", "--output", help="file, directory (default: current), - for stdout, or a URL")
    q.add_argument("--registry", type=Path, help="registry file (default: the corpus file)")
    q.set_defaults(func=cmd_models_export)

    p = sub.add_parser("exports", help="list or show recorded exports, clean up after interrupted ones")
    esub = p.add_subparsers(dest="exports_command", required=True, metavar="ACTION")
    q = esub.add_parser("list", help="exports, newest first")
    q.add_argument("--registry", "--corpus", dest="registry", required=True, type=Path)
    q.add_argument("--limit", type=int)
    add_s3_endpoint(q)
    q.set_defaults(func=cmd_exports_list)
    q = esub.add_parser("show", help="one export, with its path")
    q.add_argument("id", help="export id (or a unique prefix)")
    q.add_argument("--registry", "--corpus", dest="registry", required=True, type=Path)
    add_s3_endpoint(q)
    q.set_defaults(func=cmd_exports_show)
    q = esub.add_parser("gc", help="remove what interrupted exports left: partial files whose writer is "
                        "gone, multipart uploads (s3://) started before --older-than")
    q.add_argument("locations", nargs="*", metavar="FOLDER|s3://BUCKET/PREFIX/",
                   help="where to clean (default: every folder the registry's exports went to)")
    q.add_argument("--registry", "--corpus", dest="registry", type=Path)
    q.add_argument("--older-than", type=parse_duration, default=timedelta(hours=24), metavar="AGE",
                   help="abort uploads started more than AGE ago (e.g. 6h, 2d; default 24h): younger ones "
                   "may belong to exports still running")
    add_s3_endpoint(q)
    q.set_defaults(func=cmd_exports_gc)

    p = sub.add_parser("serve", help="serve the export page, the Files page and the JSON API over HTTP")
    p.add_argument("--corpus", required=True, metavar="FILE|URL",
                   help="SQLite corpus file, or eScriptorium's database as postgresql://...")
    p.add_argument("--media-root", metavar="DIR", help="with postgresql://: eScriptorium's MEDIA_ROOT")
    p.add_argument("--registry", type=Path,
                   help="registry file: exports, users and tokens (default: the corpus file, else "
                   "~/.local/share/pipeline/registry.sqlite)")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="where exports and thumbnails are kept (default: the registry's name + .serve/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--webhook", metavar="URL", help="POSTed a JSON description of every finished export")
    p.add_argument("--max-exports", type=int, default=3, metavar="N",
                   help="exports one user may run at once, on the fly included (default: 3)")
    p.add_argument("--secure-cookies", action="store_true", help="session cookie only over HTTPS")
    p.add_argument("--exports", metavar="DIR|s3://BUCKET/PREFIX/",
                   help="where the archives are stored (default: DATA/exports/); thumbnails and "
                   "temporary files stay under --data")
    p.add_argument("--s3-downloads", choices=("redirect", "stream"), default="redirect",
                   help="an archive on S3 is downloaded by a 307 to a presigned URL valid 5 minutes "
                   "(default: the bytes go from S3 to the client) or streamed through this server "
                   "(stream: for buckets the clients cannot reach)")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("users", help="users of pipeline serve and their API tokens")
    usub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    for action, text in (("add", "a new user; prints their token (shown only once)"),
                         ("token", "a new token for a user; prints it"),
                         ("revoke", "remove every token of a user"), ("list", "users and their tokens")):
        q = usub.add_parser(action, help=text)
        if action != "list":
            q.add_argument("name")
        q.add_argument("--registry", type=Path, help="registry file (default: the corpus's)")
        q.add_argument("--corpus", metavar="FILE|URL", help="the corpus served")
        q.set_defaults(func=cmd_users)

    p = sub.add_parser("verify", help="check archives (CRCs, XML schemas, METS references) and text exports")
    p.add_argument("archives", nargs="+")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_verify)
    return parser


def add_s3_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-endpoint", metavar="URL", default=argparse.SUPPRESS,
                        help="S3-compatible server for s3:// locations (MinIO, Ceph...; default: "
                        "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS)")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the export option model (nested models prefixed: ``--image-quality``);
    only the flags given are set, so the model's own defaults apply to the others."""
    from .options import choices, flags

    for flag in flags():
        kwargs: dict[str, Any] = {"dest": OPTION + ".".join(flag.path), "default": argparse.SUPPRESS,
                                  "help": flag.help, "metavar": flag.metavar or flag.path[-1].upper()}
        values = choices(flag.kind)
        if flag.kind is bool:
            kwargs |= {"action": "store_true"}
            del kwargs["metavar"]
        elif values is not None:
            kwargs |= {"choices": values}
        elif "dict[" in str(flag.kind):
            kwargs |= {"action": _PairAction}
        elif "int" in str(flag.kind):
            kwargs |= {"type": int}
        elif flag.kind in (float, float | None):
            kwargs |= {"type": float}
        parser.add_argument(flag.flag, **kwargs)


class _PairAction(argparse.Action):
    """``--flag KEY=VALUE``, repeatable, into a dict."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option: str | None = None) -> None:
        key, sep, item = str(value).partition("=")
        if not sep or not key:
            parser.error(f"{option}: expected KEY=VALUE, not {value!r}")
        pairs = dict(getattr(namespace, self.dest, None) or {})
        pairs[key] = item
        setattr(namespace, self.dest, pairs)


def main(argv: Sequence[str] | None = None) -> int:
    bound_heap()
    args_seen = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(options="export" in args_seen)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.debug else logging.ERROR if args.quiet else logging.INFO)
    if getattr(args, "s3_endpoint", None):  # the variable every S3 client of this process reads
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
    except (PipelineError, OSError, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
            print("pipeline: interrupted", file=sys.stderr)
            return 130
        errors = user_errors(exc)
        if args.debug or errors is None:
            raise
        for error in errors:
            print("pipeline: error: " + " ".join(str(error).split("\n")), file=sys.stderr)
        return max(getattr(error, "exit_code", 1) for error in errors)


def user_errors(exc: BaseException) -> list[BaseException] | None:
    """The errors a user caused, one per line to print (every leaf of a group), or None when any
    of them is a bug, which must show its traceback. OSErrors (a missing file, a full disk) are
    the user's machine's."""
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            if (found := user_errors(inner)) is None:
                return None
            leaves += found
        return leaves
    return [exc] if isinstance(exc, PipelineError | OSError) else None


if __name__ == "__main__":
    sys.exit(main())
