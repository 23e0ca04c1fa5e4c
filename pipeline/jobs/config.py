"""The job file: a TOML file validated by pydantic before any work starts.

Each ``[[outputs]]`` table IS an :class:`~pipeline.options.ExportOptions`: pydantic validates the
option dataclasses directly (strict, unknown keys refused), so an option added to the model is
accepted in job files, on the command line and by the HTTP API alike. Every problem becomes ONE
:class:`~pipeline.errors.UsageError` naming the file and the key path, e.g. ``outputs[1].format``.

Relative paths written in the file are relative to the file's folder (so a config works from any
CWD); paths given with ``--set KEY=VALUE`` are relative to the current directory, like any
command-line path.
"""

from __future__ import annotations

import json
import string
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import writers
from pipeline.errors import PipelineError, UsageError
from pipeline.options import ExportOptions

#: keys holding paths, resolved against the config file's folder when relative
PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("corpus",), ("source",), ("registry",), ("media_root",), ("archive", "directory"),
)
#: the registry of a job whose source keeps none of its own, in its archive folder
SOURCE_REGISTRY = ".pipeline-registry.sqlite"
#: fields of archive name templates (``archive.name``)
NAME_FIELDS = ("job", "document_id", "slug", "format", "date", "time", "fingerprint")

Strict = ConfigDict(extra="forbid", strict=True, frozen=True)
LaxPath = Annotated[Path, Field(strict=False)]


class Selection(BaseModel):
    """``[select]``: which documents. No ``documents`` and no ``tags`` = every document.

    ``project`` (id or slug), ``states`` (workflow states) and ``include_archived`` (archived
    documents are left out by default) are eScriptorium's: a ``postgresql://`` corpus only.
    """

    model_config = Strict
    documents: list[int | str] | None = None
    tags: list[str] = []
    changed_only: bool = False
    project: int | str | None = None
    states: list[int | str] = []
    include_archived: bool = False

    @property
    def escriptorium_only(self) -> bool:
        return self.project is not None or bool(self.states) or self.include_archived


def _file_name(value: str) -> str:
    """A name that goes into file names: no folder separator, no NUL (open() refuses it)."""
    if "/" in value or "\\" in value:
        raise ValueError("a file name, not a path (put folders in archive.directory)")
    if "\x00" in value:
        raise ValueError("a file name cannot hold a NUL character")
    return value


class ArchiveConfig(BaseModel):
    """``[archive]``: where archives go, how they are named, per document or bulk, retention."""

    model_config = Strict
    #: a local folder, or a URL of a registered destination ending in ``/`` (``s3://bucket/prefix/``)
    directory: str
    name: str | None = None
    mode: Literal["document", "bulk"] = "document"
    keep: Annotated[int, Field(ge=1)] | None = None

    @field_validator("name")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        used = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if unknown := used - set(NAME_FIELDS):
            raise ValueError(f"unknown field(s) {sorted(unknown)}; accepted: {', '.join(NAME_FIELDS)}")
        return _file_name(value)

    @field_validator("directory")
    @classmethod
    def _folder_or_url(cls, value: str) -> str:
        if "://" in value:
            return value if value.endswith("/") else value + "/"
        return value

    @property
    def remote(self) -> bool:
        """Whether archives go to a URL (no local folder to lock, no scratch space beside them)."""
        return "://" in self.directory

    @property
    def location(self) -> str:
        """The folder as outputs name it: an absolute path, or the URL ending in ``/``."""
        return self.directory if self.remote else str(Path(self.directory).resolve())

    def join(self, name: str) -> str:
        """``name`` in the folder."""
        return self.location + name if self.remote else str(Path(self.location) / name)

    def holds(self, location: str) -> bool:
        """Whether an output at ``location`` is directly in this folder."""
        if self.remote:
            return location.startswith(self.location) and "/" not in location[len(self.location):]
        return "://" not in location and str(Path(location).parent) == self.location

    @model_validator(mode="after")
    def _unique_names(self) -> ArchiveConfig:
        if self.mode == "document" and self.name is not None and "{document_id}" not in self.name:
            raise ValueError("a per-document archive name needs {document_id} (else documents collide)")
        return self


#: ``memory_limit``: a size such as ``2GiB`` or ``1500MB`` (Dask's notation), or ``auto``
MEMORY_LIMIT = r"^(auto|\d+(\.\d+)?\s*([kKMGT]i?B|B)?)$"


class ExecutorConfig(BaseModel):
    """``[executor]``: where the exports run. ``local``: in the job's process (``concurrency`` at a
    time). ``dask``: one task per document on a Dask cluster, the scheduler at ``scheduler``, or a
    local cluster of ``workers`` processes (default: one per core) started and stopped by the job,
    each limited to ``memory_limit``. A task whose worker died runs again, up to ``retries`` times
    on a local cluster. Bulk archives are always written by the job's own process."""

    model_config = Strict
    kind: Literal["local", "dask"] = "local"
    workers: Annotated[int, Field(ge=1, le=256)] | None = None
    scheduler: str | None = None
    memory_limit: Annotated[str, Field(pattern=MEMORY_LIMIT)] | None = None
    retries: Annotated[int, Field(ge=0, le=100)] = 3

    @model_validator(mode="after")
    def _consistent(self) -> ExecutorConfig:
        given = [k for k in ("workers", "scheduler", "memory_limit") if getattr(self, k) is not None]
        if self.kind == "local" and given:
            raise ValueError(f"{', '.join(given)}: only with kind = \"dask\" (local uses concurrency)")
        if self.scheduler is not None and (self.workers is not None or self.memory_limit is not None):
            raise ValueError("workers and memory_limit start a local cluster; a scheduler's workers "
                             "are started with `dask worker --nworkers N --memory-limit SIZE`")
        return self


class JobConfig(BaseModel):
    """A whole job file."""

    model_config = Strict
    name: str
    #: a corpus file, or eScriptorium's database ``postgresql://...`` (with ``media_root``)
    corpus: str | LaxPath | None = None
    source: str | None = None
    registry: LaxPath | None = None
    media_root: LaxPath | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    select: Selection = Selection()
    outputs: Annotated[list[ExportOptions], Field(min_length=1)]
    archive: ArchiveConfig
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, value: str) -> str:
        return _file_name(value)  # it names the report and fills {job} in archive names

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, value: str | Path | None) -> str | Path | None:
        if value is None or "://" in str(value):
            return value
        if not Path(value).is_file():
            raise ValueError(f"no such corpus file: {value}")
        return Path(value)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value and not Path(value).exists():
            raise ValueError(f"no such folder or zip: {value}")
        if value is not None and "://" not in value and not (Path(value).is_dir() or Path(value).is_file()):
            raise ValueError(f"{value}: not a regular file or folder; refused")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> JobConfig:
        if (self.corpus is None) == (self.source is None):
            raise ValueError("give either corpus (an SQLite corpus or postgresql://...) or source "
                             "(a folder or zip of ALTO/PAGE)")
        if self.database is not None:
            if self.media_root is None:
                raise ValueError("media_root: needed with a postgresql:// corpus (eScriptorium's MEDIA_ROOT)")
            if not self.media_root.is_dir():
                raise ValueError(f"media_root: no such folder: {self.media_root}")
        else:
            if self.media_root is not None:
                raise ValueError("media_root: goes with a postgresql:// corpus only")
            if self.select.escriptorium_only:
                raise ValueError("select.project, select.states and select.include_archived need a "
                                 "postgresql:// corpus")
        return self

    @property
    def database(self) -> str | None:
        """The eScriptorium database URL, if the job reads one."""
        return self.corpus if isinstance(self.corpus, str) else None

    @property
    def shown_input(self) -> str:
        """What the job reads, for messages: a URL without its password."""
        from pipeline.sources.postgres import redact  # psycopg only for such URLs

        return redact(self.input) if "://" in self.input else self.input

    @property
    def input(self) -> str:
        """What the job reads: the corpus file, or the folder, zip or URL of ``source``."""
        where = self.corpus or self.source
        assert where is not None
        return str(where)

    def registry_path(self, default: Path | None) -> Path:
        """The registry file: ``registry`` if given, else the source's own (``default``: a corpus
        file keeps its exports, like ``pipeline export``), else a file in the archive folder."""
        if self.registry or default:
            return self.registry or default  # type: ignore[return-value]
        if self.archive.remote:
            raise UsageError(f"registry: archives go to {self.archive.location} and the source keeps no "
                             "registry; give registry = a local file")
        return Path(self.archive.location) / SOURCE_REGISTRY


def key_path(loc: Sequence[str | int]) -> str:
    """``('outputs', 1, 'format')`` → ``outputs[1].format``."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f".{item}" if text else str(item)
    return text or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    loc = [item for item in error["loc"] if not str(item).startswith(("function-", "union["))]
    unknown = error["type"] in ("extra_forbidden", "unexpected_keyword_argument")
    message = "unknown key" if unknown else error["msg"]
    message = message.removeprefix("Value error, ")
    if error["type"] not in ("missing", "missing_argument") and not unknown \
            and not isinstance(error["input"], Mapping):
        message += f" (got {error['input']!r})"
    return f"{key_path(loc)}: {message}"


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``archive.keep=3`` → (['archive', 'keep'], 3); the value is TOML, else a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. corpus=demo/corpus.sqlite")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [int(k) if k.isdigit() else k for k in key.strip().split(".")], value


def _assign(data: dict[str, Any], keys: list[str | int], value: Any) -> None:
    node: Any = data
    for key, after in zip(keys, keys[1:], strict=False):
        try:
            node = node[key]
        except (KeyError, IndexError):
            if not isinstance(key, str) or not isinstance(node, dict):
                raise UsageError(f"--set {key_path(keys)}: no such key to set") from None
            node = node.setdefault(key, [] if isinstance(after, int) else {})
    try:
        node[keys[-1]] = value
    except (IndexError, TypeError):
        raise UsageError(f"--set {key_path(keys)}: no such key to set") from None


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    for keys in PATH_KEYS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and "://" not in value:  # URLs are not relative to anything
            node[keys[-1]] = str(folder / value)


def load_config(path: Path, overrides: Sequence[str] = ()) -> JobConfig:
    """Read, override and validate a job file; UsageError (exit 2) naming file and key on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read job file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    _resolve_paths(data, path.parent)
    data.setdefault("name", path.stem)
    for override in overrides:
        _assign(data, *parse_override(override))
    try:  # through JSON: strict mode then accepts tables for the option dataclasses
        config = JobConfig.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        raise UsageError(f"{path}: " + "; ".join(problems)) from None
    except PipelineError as exc:
        raise UsageError(f"{path}: {exc}") from None
    for n, output in enumerate(config.outputs):
        if output.part_ids is not None:
            raise UsageError(f"{path}: outputs[{n}].part_ids: unknown key")
        try:
            writers.get(output.format)
        except UsageError as exc:
            raise UsageError(f"{path}: outputs[{n}].format: {exc}") from None
    return config
