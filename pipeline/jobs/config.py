"""The job file: a TOML file validated by pydantic before any work starts.

Output tables are generated from :class:`~pipeline.export.ExportOptions` (and nested option
dataclasses such as ``ImageOptions``), so an option another module adds to ``ExportOptions`` is
accepted in job files without touching this module. Every problem becomes ONE
:class:`~pipeline.errors.UsageError` naming the file and the key path, e.g. ``outputs[1].format``.

Relative paths written in the file are relative to the file's folder (so a config works from any
CWD); paths given with ``--set KEY=VALUE`` are relative to the current directory, like any
command-line path.
"""

from __future__ import annotations

import dataclasses
import string
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from pipeline import formats
from pipeline.errors import PipelineError, UsageError
from pipeline.export import ExportOptions

#: keys holding paths, resolved against the config file's folder when relative
PATH_KEYS: tuple[tuple[str, ...], ...] = (("corpus",), ("source",), ("registry",), ("archive", "directory"))
#: the registry of a job that reads a folder or zip (no corpus file to keep it in), in its archive folder
SOURCE_REGISTRY = ".pipeline-registry.sqlite"
#: ExportOptions fields a job sets itself rather than per output
JOB_WIDE: frozenset[str] = frozenset({"part_ids"})
#: fields whose config type differs from the dataclass type (friendlier input, better errors)
CONFIG_TYPES: dict[str, Any] = {
    "ExportOptions.format": Literal[tuple(formats.FORMATS)],  # type: ignore[misc]
    "ExportOptions.regions": str | list[str] | None,
}
#: fields of archive name templates (``archive.name``)
NAME_FIELDS = ("job", "document_id", "slug", "format", "date", "time", "fingerprint")

Strict = ConfigDict(extra="forbid", strict=True, frozen=True)
LaxPath = Annotated[Path, Field(strict=False)]


def _model_for(cls: type, name: str) -> type[BaseModel]:
    """A strict pydantic model mirroring the option dataclass ``cls`` (nested dataclasses too)."""
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in JOB_WIDE:
            continue
        hint = CONFIG_TYPES.get(f"{cls.__name__}.{field.name}", hints[field.name])
        default = field.default
        if dataclasses.is_dataclass(hint):
            hint = _model_for(hint, f"{hint.__name__}Config")  # type: ignore[arg-type]
            default = hint()
        fields[field.name] = (hint, default)
    return create_model(name, __config__=Strict, **fields)


def _options_from(cls: type, data: Mapping[str, Any]) -> Any:
    """Build the option dataclass ``cls`` from a validated model dump."""
    hints = get_type_hints(cls)
    values = {
        key: _options_from(hints[key], value) if dataclasses.is_dataclass(hints[key]) else value
        for key, value in data.items()
    }
    if isinstance(values.get("regions"), list):
        values["regions"] = ",".join(values["regions"])
    return cls(**values)


class OutputConfig(_model_for(ExportOptions, "OutputFields")):  # type: ignore[misc]
    """One ``[[outputs]]`` table: any ExportOptions field except the job-wide ones."""

    @model_validator(mode="after")
    def _buildable(self) -> OutputConfig:
        try:
            self.export_options()
        except UsageError as exc:  # the option dataclasses check their own values
            raise ValueError(str(exc)) from None
        return self

    def export_options(self, part_ids: tuple[int, ...] | None = None) -> ExportOptions:
        options: ExportOptions = _options_from(ExportOptions, self.model_dump())
        return dataclasses.replace(options, part_ids=part_ids)


class Selection(BaseModel):
    """``[select]``: which documents. No ``documents`` and no ``tags`` = every document."""

    model_config = Strict
    documents: list[int | str] | None = None
    tags: list[str] = []
    changed_only: bool = False


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
    directory: LaxPath
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

    @model_validator(mode="after")
    def _unique_names(self) -> ArchiveConfig:
        if self.mode == "document" and self.name is not None and "{document_id}" not in self.name:
            raise ValueError("a per-document archive name needs {document_id} (else documents collide)")
        return self


class JobConfig(BaseModel):
    """A whole job file."""

    model_config = Strict
    name: str
    corpus: LaxPath | None = None
    source: LaxPath | None = None
    registry: LaxPath | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    select: Selection = Selection()
    outputs: Annotated[list[OutputConfig], Field(min_length=1)]
    archive: ArchiveConfig

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, value: str) -> str:
        return _file_name(value)  # it names the report and fills {job} in archive names

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such corpus file: {value}")
        return value

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"no such folder or zip: {value}")
        if value is not None and not (value.is_dir() or value.is_file()):
            raise ValueError(f"{value}: not a regular file or folder; refused")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> JobConfig:
        if (self.corpus is None) == (self.source is None):
            raise ValueError("give either corpus (an SQLite corpus) or source (a folder or zip of ALTO/PAGE)")
        return self

    @property
    def input(self) -> Path:
        """What the job reads: the corpus file or the folder/zip."""
        path = self.corpus or self.source
        assert path is not None
        return path

    @property
    def registry_path(self) -> Path:
        """The registry file: ``registry`` if given, else the corpus file (like ``pipeline export``),
        else a file in the archive folder."""
        return self.registry or self.corpus or self.archive.directory / SOURCE_REGISTRY


def key_path(loc: Sequence[str | int]) -> str:
    """``('outputs', 1, 'format')`` → ``outputs[1].format``."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f".{item}" if text else str(item)
    return text or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    loc = [item for item in error["loc"] if not str(item).startswith(("function-", "union["))]
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    message = message.removeprefix("Value error, ")
    if error["type"] not in ("missing", "extra_forbidden") and not isinstance(error["input"], Mapping):
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
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = str(folder / node[keys[-1]])


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
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        raise UsageError(f"{path}: " + "; ".join(problems)) from None
    except PipelineError as exc:
        raise UsageError(f"{path}: {exc}") from None
