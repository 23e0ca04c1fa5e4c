"""OCR models (issue 20): the model tables in both stores, importing a model file, listing models.

The demo holds three kraken models (see ``pipeline.demo``); the PostgreSQL demo is a copy of the
same corpus in eScriptorium's schema, read by a role with SELECT grants only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.cli import main
from pipeline.errors import CorpusError
from pipeline.ocrmodel import layer_model
from pipeline.sources.postgres import PostgresSource
from pipeline.store import Corpus
from pipeline.store.schema import SCHEMA_VERSION
from tests.pgcluster import Store

#: a model name with every character XML, JSON and file systems care about
HOSTILE = "Tëst <model> & \"quotes\" 'apos' ]]> /slash\\ \x7f"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def models_of(store: Store) -> list[Any]:
    async def read() -> list[Any]:
        if store.kind == "sqlite":
            with Corpus.open(store.corpus, readonly=True) as corpus:
                return await corpus.models()
        with PostgresSource(store.corpus, media_root=store.media_root) as pg:
            return await pg.models()

    return anyio.run(read)


def test_demo_models_listed_from_both_stores(demo_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "models", "list", *demo_store.args)
    assert (code, err) == (0, "")
    rows = out.splitlines()
    assert len(rows) == 3
    assert rows[0].split()[:3] == ["1", "'blla'", "segmentation"]
    tuned = rows[2]
    for fact in ("'catmus-medieval-1.5'", "recognition", "accuracy 97.81%", "6 epochs", "owner demo",
                 "parent 'catmus-medieval-1.0' (2)", "trained on 1 ", "run on 1, 2"):
        assert fact in tuned, (fact, tuned)
    size = (Path(demo_store.media_root or Path(demo_store.corpus).with_suffix(".media"))
            / "models/c07e52d9/catmus-medieval-15.mlmodel").stat().st_size
    assert f"{size:,} bytes" in tuned

    code, out, _ = cli(capsys, "models", "list", *demo_store.args, "--document", "2", "--json")
    described = json.loads(out)
    assert [m["name"] for m in described] == ["blla", "catmus-medieval-1.5"]  # 1.0 never ran on it
    tuned_json = described[1]
    assert tuned_json["parent"] == {"id": 2, "name": "catmus-medieval-1.0"}
    assert tuned_json["script"] == "Latin"
    assert tuned_json["rights"] == [{"kind": "user", "name": "reviewer"},
                                    {"kind": "group", "name": "Paleography seminar"}]
    assert [v["data"]["training_epoch"] for v in tuned_json["versions"]] == [6, 5, 4, 3, 2, 1]
    docs = {d["id"]: d for d in tuned_json["documents"]}
    assert docs[1]["trained_on"] == "2023-01-01T12:00:00+00:00" and docs[2]["trained_on"] is None
    assert docs[2]["executed_on"] == "2023-01-04T02:00:00+00:00"


def test_both_stores_describe_the_models_identically(demo_corpus: Path, pg_demo: Store) -> None:
    sqlite_models = models_of(Store("sqlite", str(demo_corpus)))
    pg_models = models_of(pg_demo)
    assert [m.describe() for m in sqlite_models] == [m.describe() for m in pg_models]
    assert len(pg_models) == 3


def test_layer_named_after_a_model_finds_it(demo_corpus: Path) -> None:
    models = models_of(Store("sqlite", str(demo_corpus)))
    assert layer_model("kraken:catmus-medieval-1.5", models, 1).name == "catmus-medieval-1.5"
    assert layer_model("catmus-medieval-1.0", models, 1).id == 2  # a bare model name
    assert layer_model("manual", models, 1) is None
    assert layer_model("kraken:blla", models, 1) is None  # a segmenter writes no text


# -- the corpus schema version -------------------------------------------------------------------


def _downgrade_to_v1(path: Path) -> None:
    """What a corpus written before the model tables looks like."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for table in ("core_ocrmodelright", "core_ocrmodeldocument", "core_ocrmodel", "core_script",
                      "auth_group", "users_user"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE pipeline_meta SET value = '1' WHERE key = 'schema_version'")
        conn.commit()


def _version(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT value FROM pipeline_meta WHERE key = 'schema_version'").fetchone()[0]


def test_version_1_corpus_is_read_as_is_and_upgraded_when_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.sqlite"
    with Corpus.open(path, create=True) as corpus, corpus.transaction() as w:
        w.add_layer(w.add_document("old document"), "manual")
    _downgrade_to_v1(path)
    before = path.read_bytes()
    code, out, err = cli(capsys, "models", "list", "--corpus", str(path))  # read-only: untouched
    assert (code, out, err) == (0, "", "")
    assert path.read_bytes() == before and _version(path) == "1"
    model = tmp_path / "m.mlmodel"
    model.write_bytes(b"\x08\x05" + bytes(range(256)))
    code, out, err = cli(capsys, "import", str(model), "--corpus", str(path), "--job", "recognition")
    assert code == 0, err
    assert _version(path) == str(SCHEMA_VERSION)
    with Corpus.open(path, readonly=True) as corpus:
        assert [m.name for m in anyio.run(corpus.models)] == ["m"]
        assert corpus.connection.execute("SELECT name FROM core_document").fetchall() == [("old document",)]


def test_newer_corpus_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Corpus.open(path, create=True).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE pipeline_meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
        conn.commit()
    before = path.read_bytes()
    newer = f"schema version {SCHEMA_VERSION + 1} \\(written by a newer pipeline\\)"
    with pytest.raises(CorpusError, match=newer):
        Corpus.open(path)
    assert path.read_bytes() == before


# -- importing a model file ----------------------------------------------------------------------


def test_import_model_with_flags_and_hostile_name(
    tmp_path: Path, demo_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    corpus.write_bytes(demo_corpus.read_bytes())
    source = demo_corpus.with_suffix(".media") / "models/c07e52d9/catmus-medieval-15.mlmodel"
    code, out, err = cli(
        capsys, "import", str(source), "--corpus", str(corpus), "--model-name", HOSTILE,
        "--job", "recognition", "--accuracy", "0.912", "--epochs", "14", "--owner", "alice",
        "--parent", "catmus-medieval-1.5",
        "--script", "Latin", "--trained-on", "1", "--executed-on", "2",
    )
    assert code == 0, err
    assert out.startswith(f"model 4 {HOSTILE!r} (recognition): ")
    stored = Path(out.rsplit(": ", 1)[1].strip())
    assert stored.read_bytes() == source.read_bytes()
    assert stored.parent.parent == (tmp_path / "demo.media" / "models").resolve()  # the corpus says so
    assert stored.name.endswith(".mlmodel") and "<" not in stored.name and "/" not in stored.name
    code, out, _ = cli(capsys, "models", "list", "--corpus", str(corpus), "--json")
    model = json.loads(out)[-1]
    assert model["name"] == HOSTILE and model["job"] == "recognition" and model["owner"] == "alice"
    assert (model["training_accuracy"], model["training_epoch"]) == (0.912, 14)
    assert model["parent"] == {"id": 3, "name": "catmus-medieval-1.5"}
    assert model["file_size"] == source.stat().st_size
    assert [(d["id"], bool(d["trained_on"]), bool(d["executed_on"])) for d in model["documents"]] == [
        (1, True, False), (2, False, True)]


def test_import_model_from_its_model_json_keeps_the_history(
    tmp_path: Path, demo_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    corpus.write_bytes(demo_corpus.read_bytes())
    code, out, _ = cli(capsys, "models", "list", "--corpus", str(demo_corpus), "--json")
    described = json.loads(out)[2]
    sidecar = tmp_path / "model.json"
    sidecar.write_text(json.dumps(described | {"name": "catmus-medieval-1.5 (restored)"}), encoding="utf-8")
    source = demo_corpus.with_suffix(".media") / described["file"]
    code, out, err = cli(capsys, "import", str(source), "--corpus", str(corpus), "--metadata", str(sidecar))
    assert code == 0, err
    code, out, _ = cli(capsys, "models", "list", "--corpus", str(corpus), "--json")
    restored = json.loads(out)[-1]
    for key in ("job", "training_epoch", "training_accuracy", "training_total", "owner", "parent", "script",
                "revision", "version_created_at", "version_updated_at", "versions"):
        assert restored[key] == described[key], key
    assert [(d["id"], d["trained_on"], d["executed_on"]) for d in restored["documents"]] == [
        (d["id"], d["trained_on"], d["executed_on"]) for d in described["documents"]]


def test_failed_model_import_leaves_no_file_and_no_row(
    tmp_path: Path, demo_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    corpus.write_bytes(demo_corpus.read_bytes())
    model = tmp_path / "new.mlmodel"
    model.write_bytes(b"\x08\x05" * 100)
    code, _, err = cli(capsys, "import", str(model), "--corpus", str(corpus), "--job", "recognition",
                       "--parent", "no such model")
    assert code == 2 and err.count("\n") == 1 and "'no such model'" in err
    code, _, err = cli(capsys, "import", str(model), "--corpus", str(corpus), "--job", "recognition",
                       "--trained-on", "999")
    assert code == 2 and "999" in err
    code, _, err = cli(capsys, "import", str(model), "--corpus", str(corpus))
    assert code == 2 and "--job" in err and str(model) in err
    assert not list((tmp_path / "c.media").rglob("new*"))
    with Corpus.open(corpus, readonly=True) as c:
        assert len(anyio.run(c.models)) == 3


def test_demo_model_files_are_kraken_coreml_protobufs(demo_corpus: Path) -> None:
    """The demo's files carry kraken's metadata where kraken puts it (description.metadata.userDefined)."""
    models = models_of(Store("sqlite", str(demo_corpus)))
    for model in models:
        data = (demo_corpus.with_suffix(".media") / model.file).read_bytes()
        assert data[:2] == b"\x08\x05"  # field 1 (specificationVersion) = 5
        assert b"kraken_meta" in data and f'"completed_epochs": {model.training_epoch}'.encode() in data
        assert len(data) == model.file_size and 2_000 < len(data) < 10_000
        assert hashlib.sha256(data).hexdigest()  # readable whole


# -- models export -------------------------------------------------------------------------------


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def test_models_export_from_both_stores_is_byte_for_byte(
    demo_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry.sqlite"
    code, out, err = cli(capsys, "models", "export", *demo_store.args, "--model", "catmus-medieval-1.5",
                         "--model", "1", "-o", f"{tmp_path}/", "--registry", str(registry))
    assert (code, err) == (0, "")
    archive = Path(out.strip())
    assert archive.parent == tmp_path and archive.name.startswith("export_models_2_models_")
    members = _zip_members(archive)
    assert sorted(members) == ["models/1_blla/blla.mlmodel", "models/1_blla/model.json",
                               "models/3_catmus_medieval_15/catmus-medieval-15.mlmodel",
                               "models/3_catmus_medieval_15/model.json"]
    media = demo_store.media_root or Path(demo_store.corpus).with_suffix(".media")
    for folder, stored in (("models/1_blla/", "models/3f2a9c1e/blla.mlmodel"),
                           ("models/3_catmus_medieval_15/", "models/c07e52d9/catmus-medieval-15.mlmodel")):
        original = (media / stored).read_bytes()
        name = stored.rsplit("/", 1)[1]
        assert members[folder + name] == original
        described = json.loads(members[folder + "model.json"])
        assert described["sha256"] == hashlib.sha256(original).hexdigest()
        assert described["file"] == stored and described["file_size"] == len(original)
    tuned = json.loads(members["models/3_catmus_medieval_15/model.json"])
    assert tuned["ancestors"] == [{"id": 2, "name": "catmus-medieval-1.0",
                                   "revision": tuned["ancestors"][0]["revision"],
                                   "training_accuracy": 0.9512, "training_epoch": 38}]
    assert len(tuned["versions"]) == 6 and tuned["versions"][0]["data"]["training_epoch"] == 6
    with contextlib.closing(sqlite3.connect(registry)) as db:
        rows = db.execute("SELECT format, status, path, sha256, part_count, document_name"
                          " FROM pipeline_export").fetchall()
    assert rows == [("models", "complete", str(archive), hashlib.sha256(archive.read_bytes()).hexdigest(), 2,
                     "models: catmus-medieval-1.5, blla")]


def test_models_export_is_the_same_bytes_from_either_store_and_run(
    demo_corpus: Path, pg_demo: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digests = set()
    for n, store in enumerate((Store("sqlite", str(demo_corpus)), pg_demo, pg_demo)):
        target = tmp_path / f"models{n}.zip"
        code, _, err = cli(capsys, "models", "export", *store.args, "--all", "-o", str(target),
                           "--registry", str(tmp_path / "r.sqlite"))
        assert code == 0, err
        digests.add(hashlib.sha256(target.read_bytes()).hexdigest())
    assert len(digests) == 1


def _corpus_copy(demo_corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the demo corpus with its own media folder (so a test may break it)."""
    import shutil

    corpus = tmp_path / "c.sqlite"
    shutil.copyfile(demo_corpus, corpus)
    with contextlib.closing(sqlite3.connect(corpus)) as db:
        db.execute("UPDATE pipeline_meta SET value = 'c.media' WHERE key = 'media_root'")
        db.commit()
    shutil.copytree(demo_corpus.with_suffix(".media"), tmp_path / "c.media")
    return corpus, tmp_path / "c.media"


def test_missing_model_file_is_one_line_naming_model_and_path(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, media = _corpus_copy(demo_corpus, tmp_path)
    lost = media / "models/c07e52d9/catmus-medieval-15.mlmodel"
    lost.unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = cli(capsys, "models", "export", "--corpus", str(corpus), "--all", "-o", f"{out_dir}/")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "model 3 ('catmus-medieval-1.5')" in err and str(lost) in err
    assert list(out_dir.iterdir()) == []  # nothing published, not even a partial file
    code, out, _ = cli(capsys, "exports", "list", "--corpus", str(corpus))
    assert " failed " in out and "models" in out

    code, out, err = cli(capsys, "models", "export", "--corpus", str(corpus), "--all", "--on-error", "skip",
                         "-o", f"{out_dir}/")
    assert code == 1
    assert err.startswith("pipeline: skipped model 3 ('catmus-medieval-1.5')") and str(lost) in err
    members = _zip_members(Path(out.strip()))
    assert "models/3_catmus_medieval_15/catmus-medieval-15.mlmodel" not in members
    kept = json.loads(members["models/3_catmus_medieval_15/model.json"])
    assert kept["file_missing"] is True and kept["sha256"] is None and len(kept["versions"]) == 6
    report = json.loads(members["export-report.json"])
    assert [(r["model"], r["file"]) for r in report] == [(3, "models/c07e52d9/catmus-medieval-15.mlmodel")]
    assert "models/1_blla/blla.mlmodel" in members and "models/2_catmus_medieval_10/model.json" in members


def test_model_without_file_and_unknown_model(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, _ = _corpus_copy(demo_corpus, tmp_path)
    with contextlib.closing(sqlite3.connect(corpus)) as db:
        db.execute("UPDATE core_ocrmodel SET file = NULL, training = 1 WHERE id = 2")
        db.commit()
    target = str(tmp_path / "x.zip")
    code, _, err = cli(capsys, "models", "export", "--corpus", str(corpus), "--model", "2", "-o", target)
    assert code == 1 and "model 2 ('catmus-medieval-1.0') has no file" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "models", "export", "--corpus", str(corpus), "--model", "nope",
                       "--model", "99", "-o", target)
    assert code == 2 and "no model 'nope', '99'" in err
    assert not (tmp_path / "x.zip").exists()


def test_model_with_hostile_name_exports_and_reimports(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, media = _corpus_copy(demo_corpus, tmp_path)
    weights = tmp_path / "odd.mlmodel"
    weights.write_bytes(bytes(range(256)) * 64)
    code, _, err = cli(capsys, "import", str(weights), "--corpus", str(corpus), "--model-name", HOSTILE,
                       "--job", "segmentation", "--executed-on", "2")
    assert code == 0, err
    code, out, err = cli(capsys, "models", "export", "--corpus", str(corpus), "--model", HOSTILE,
                         "-o", str(tmp_path / "odd.zip"))
    assert code == 0, err
    members = _zip_members(tmp_path / "odd.zip")
    (folder,) = {name.rsplit("/", 1)[0] for name in members}
    assert folder.startswith("models/4_") and all(c not in folder for c in '<>&"\'\\\x7f ')
    described = json.loads(members[folder + "/model.json"])
    assert described["name"] == HOSTILE and members[folder + "/odd.mlmodel"] == weights.read_bytes()


# -- provenance and models in document archives --------------------------------------------------

ALTO_NS = "{http://www.loc.gov/standards/alto/ns-v4#}"
PAGE_NS = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
METS_NS = "{http://www.loc.gov/METS/}"
TEI_NS = "{http://www.tei-c.org/ns/1.0}"


def _xml(data: bytes) -> Any:
    from lxml import etree

    return etree.fromstring(data)


def _export(capsys: pytest.CaptureFixture[str], store_args: list[str], target: Path, *args: str) -> Path:
    """An export recorded beside ``target``, never in the session's shared demo corpus."""
    registry = target.parent / "registry.sqlite"
    code, _, err = cli(capsys, "-q", "export", *store_args, *args, "-o", str(target),
                       "--registry", str(registry))
    assert code == 0, err
    return target


@pytest.mark.parametrize("layer", ["kraken:catmus-medieval-1.5", "manual"])
def test_provenance_in_alto_page_and_mets_valid_and_the_same_from_both_stores(
    demo_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], layer: str
) -> None:
    from pipeline import __version__
    from pipeline.verify import verify_archive

    by_model = layer != "manual"
    for fmt in ("alto", "page"):
        archive = _export(capsys, demo_store.args, tmp_path / f"{fmt}.zip", "--document", "2",
                          "--format", fmt, "--layer", layer)
        assert verify_archive(archive) == []  # ALTO 4.2 and 4.4, PAGE 2019, METS: every entry valid
        members = _zip_members(archive)
        page = _xml(members["f001.xml"])
        if fmt == "alto":
            steps = page.findall(f"{ALTO_NS}Description/{ALTO_NS}Processing")
            described = [(s.findtext(f"{ALTO_NS}processingStepDescription"),
                          s.findtext(f"{ALTO_NS}processingDateTime"),
                          s.findtext(f"{ALTO_NS}processingSoftware/{ALTO_NS}softwareName"),
                          s.findtext(f"{ALTO_NS}processingSoftware/{ALTO_NS}softwareVersion")) for s in steps]
            expected = [("segmentation", "2023-01-02T02:00:00+00:00", "kraken", None)]
            if by_model:  # run on document 2 two days after its segmentation, as the data says
                expected.append((f"recognition: layer {layer}", "2023-01-04T02:00:00+00:00", "kraken", None))
            expected.append((f"export of transcription layer {layer}", None, "pipeline", __version__))
            assert described == expected
            if by_model:
                settings = steps[1].findtext(f"{ALTO_NS}processingStepSettings")
                assert "catmus-medieval-1.5 (eScriptorium model 3" in settings
                assert "fine-tuned from catmus-medieval-1.0" in settings
        else:
            items = page.findall(f"{PAGE_NS}Metadata/{PAGE_NS}MetadataItem")
            assert {i.get("type") for i in items} == {"processingStep"}
            names = [(i.get("name"), i.get("value"), i.get("date")) for i in items]
            assert names[0] == ("segmentation", "kraken blla", "2023-01-02T02:00:00+00:00")
            assert names[-1] == ("export", f"pipeline {__version__}", None)
            assert len(names) == (3 if by_model else 2)
            labels = {lab.get("type"): lab.get("value") for lab in items[-1].iter(f"{PAGE_NS}Label")}
            assert labels == {"software": "pipeline", "version": __version__, "layer": layer}
        mets = _xml(members["METS.xml"])
        agents = mets.findall(f"{METS_NS}metsHdr/{METS_NS}agent")
        assert agents[0].get("ROLE") == "CREATOR" and agents[0].findtext(f"{METS_NS}name") == \
            f"pipeline {__version__}"
        roles = [a.get("OTHERROLE") for a in agents[1:]]
        assert roles == ["SEGMENTATION"] + (["RECOGNITION"] if by_model else [])


@pytest.mark.parametrize("layer", ["kraken:catmus-medieval-1.5", "manual"])
def test_provenance_in_tei_valid_and_the_same_from_both_stores(
    demo_store: Store, demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], layer: str
) -> None:
    from pipeline import __version__
    from pipeline.verify import verify_archive

    by_model = layer != "manual"
    for fmt in ("tei",):
        archive = _export(capsys, demo_store.args, tmp_path / f"{fmt}.zip", "--document", "1",
                          "--format", fmt, "--layer", layer)
        assert verify_archive(archive) == []  # TEI against tei_all with Jing
        if demo_store.kind == "postgresql":  # the same bytes as from the SQLite corpus
            same = _export(capsys, ["--corpus", str(demo_corpus)], tmp_path / f"{fmt}-sqlite.zip",
                           "--document", "1", "--format", fmt, "--layer", layer)
            assert same.read_bytes() == archive.read_bytes()
        members = _zip_members(archive)
        if fmt == "tei":
            (name,) = members
            tei = _xml(members[name])
            apps = tei.findall(f".//{TEI_NS}appInfo/{TEI_NS}application")
            got = [(a.get("ident"), a.get("version"), a.get("type"), a.get("when")) for a in apps]
            expected = [("pipeline", __version__, None, None),
                        ("eScriptorium-model-1", "50", "segmentation", "2023-01-01T02:00:00+00:00")]
            if by_model:
                expected.append(("eScriptorium-model-3", "6", "recognition", "2023-01-03T02:00:00+00:00"))
            assert got == expected



def _hocr_pages(archive: Path) -> dict[str, bytes]:
    return {n: d for n, d in _zip_members(archive).items() if n.endswith(".html")}


def _ocr_system(page: bytes) -> str:
    from pipeline.validate import parser

    (system,) = _xml_with(page, parser()).xpath("//h:meta[@name='ocr-system']/@content",
                                               namespaces={"h": "http://www.w3.org/1999/xhtml"})
    return system


def _xml_with(data: bytes, xml_parser: Any) -> Any:
    from lxml import etree

    return etree.fromstring(data, xml_parser)


@pytest.mark.parametrize("layer", ["kraken:catmus-medieval-1.5", "manual"])
def test_provenance_in_iiif_and_hocr_valid_and_the_same_from_both_stores(
    demo_store: Store, demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], layer: str
) -> None:
    """The IIIF manifest's ``metadata`` (English labels, after the document's own entries) and
    hOCR's ``ocr-system`` say who made them: this program and version, the layer, the models of
    the document (segmentation run on it; the recognition model only for a layer named after
    it), dated as the data dates the runs. Valid for iiif-prezi3 and hocr-spec."""
    from iiif_prezi3 import Manifest
    from test_hocr import spec_errors

    from pipeline import __version__
    from pipeline.formats.iiif import is_provenance

    by_model = layer != "manual"
    models = {m.id: m for m in models_of(demo_store)}
    blla = f"kraken model blla (eScriptorium model 1, revision {models[1].revision}, accuracy " \
           f"{models[1].training_accuracy:.2%} after 50 epochs), run 2023-01-01T02:00:00+00:00"
    catmus = f"kraken model catmus-medieval-1.5 (eScriptorium model 3, revision {models[3].revision}, " \
             f"accuracy {models[3].training_accuracy:.2%} after 6 epochs, " \
             "fine-tuned from catmus-medieval-1.0), run 2023-01-03T02:00:00+00:00"
    archives = {}
    for fmt in ("iiif", "hocr"):
        archives[fmt] = _export(capsys, demo_store.args, tmp_path / f"{fmt}.zip", "--document", "1",
                                "--format", fmt, "--layer", layer)
        if demo_store.kind == "postgresql":  # the same bytes as from the SQLite corpus
            same = _export(capsys, ["--corpus", str(demo_corpus)], tmp_path / f"{fmt}-sqlite.zip",
                           "--document", "1", "--format", fmt, "--layer", layer)
            assert same.read_bytes() == archives[fmt].read_bytes()
    manifest = json.loads(_zip_members(archives["iiif"])["manifest.json"])
    Manifest(**manifest)  # iiif-prezi3's models accept it
    entries = manifest["metadata"]
    own = [e for e in entries if not is_provenance(e)]
    assert own and all(e["label"] == {"none": e["label"]["none"]} for e in own)
    assert entries[:len(own)] == own  # the document's metadata first, as it was
    got = [(e["label"]["en"][0], *e["value"].items()) for e in entries[len(own):]]
    expected = [("Exported by", ("none", [f"pipeline {__version__}"])),
                ("Transcription layer", ("none", [layer])), ("Segmentation model", ("en", [blla]))]
    if by_model:
        expected.append(("Recognition model", ("en", [catmus])))
    assert got == expected
    pages = _hocr_pages(archives["hocr"])
    assert len(pages) == 4
    system = f"pipeline {__version__}; layer {layer}; segmentation: {blla}"
    if by_model:
        system += f"; recognition: {catmus}"
    for name, page in pages.items():
        assert spec_errors(page, tmp_path, name) == []
        assert _ocr_system(page) == system


def test_iiif_and_hocr_provenance_of_a_model_with_a_json_and_xml_hostile_name(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A layer made by a model whose name holds < & " ' ]]> \\ a DEL, a tab, U+2028 and braces:
    the manifest is JSON iiif-prezi3 accepts and hOCR hocr-spec accepts, the name intact in both."""
    from iiif_prezi3 import Manifest
    from test_hocr import spec_errors

    from pipeline.formats.iiif import is_provenance

    name = HOSTILE + "\t\u2028{0}"
    corpus, _ = _corpus_copy(demo_corpus, tmp_path)
    weights = tmp_path / "hostile.mlmodel"
    weights.write_bytes(b"\x08\x05" + bytes(512))
    code, _, err = cli(capsys, "import", str(weights), "--corpus", str(corpus), "--model-name", name,
                       "--job", "recognition", "--executed-on", "1")
    assert code == 0, err
    with contextlib.closing(sqlite3.connect(corpus)) as db:  # the layer it wrote, named as eScriptorium does
        db.execute("UPDATE core_transcription SET name = ? WHERE document_id = 1 AND name = ?",
                   ("kraken:" + name, "kraken:catmus-medieval-1.5"))
        db.commit()
    iiif = _export(capsys, ["--corpus", str(corpus)], tmp_path / "h-iiif.zip", "--document", "1",
                   "--format", "iiif", "--layer", "kraken:" + name)
    manifest = json.loads(_zip_members(iiif)["manifest.json"])
    Manifest(**manifest)
    values = {e["label"]["en"][0]: e["value"] for e in manifest["metadata"] if is_provenance(e)}
    assert values["Transcription layer"] == {"none": ["kraken:" + name]}
    assert values["Recognition model"]["en"][0].startswith(f"kraken model {name} (eScriptorium model 4, ")
    hocr = _export(capsys, ["--corpus", str(corpus)], tmp_path / "h-hocr.zip", "--document", "1",
                   "--format", "hocr", "--layer", "kraken:" + name)
    for page_name, page in _hocr_pages(hocr).items():
        assert spec_errors(page, tmp_path, page_name) == []
        assert "<model>" not in page.decode()  # escaped, never markup
        assert f"; recognition: kraken model {name} (eScriptorium model 4, " in _ocr_system(page)


def test_provenance_of_a_model_with_an_xml_hostile_name(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A layer made by a model whose name holds < & " ' ]]> and a DEL: valid XML, the name intact."""
    from pipeline.verify import verify_archive

    corpus, _ = _corpus_copy(demo_corpus, tmp_path)
    weights = tmp_path / "hostile.mlmodel"
    weights.write_bytes(b"\x08\x05" + bytes(512))
    code, _, err = cli(capsys, "import", str(weights), "--corpus", str(corpus), "--model-name", HOSTILE,
                       "--job", "recognition", "--executed-on", "1", "--parent", "catmus-medieval-1.5")
    assert code == 0, err
    with contextlib.closing(sqlite3.connect(corpus)) as db:  # the layer it wrote, named as eScriptorium does
        db.execute("UPDATE core_transcription SET name = ? WHERE document_id = 1 AND name = ?",
                   ("kraken:" + HOSTILE, "kraken:catmus-medieval-1.5"))
        db.commit()
    archive = _export(capsys, ["--corpus", str(corpus)], tmp_path / "h-tei.zip", "--document", "1",
                      "--format", "tei", "--layer", "kraken:" + HOSTILE)
    assert verify_archive(archive) == []
    (data,) = _zip_members(archive).values()
    assert HOSTILE in [a.findtext(f"{TEI_NS}label") for a in _xml(data).iter(f"{TEI_NS}application")]
    for fmt in ("alto", "page"):
        archive = _export(capsys, ["--corpus", str(corpus)], tmp_path / f"h-{fmt}.zip", "--document", "1",
                          "--format", fmt, "--layer", "kraken:" + HOSTILE, "--models", "used")
        assert verify_archive(archive) == []
        members = _zip_members(archive)
        text = members["f001.xml"].decode()
        page = _xml(members["f001.xml"])
        if fmt == "alto":
            settings = [s.findtext(f"{ALTO_NS}processingStepSettings")
                        for s in page.iter(f"{ALTO_NS}Processing")]
            assert any(s and s.startswith(f"kraken model {HOSTILE} (eScriptorium model 4") for s in settings)
        else:
            values = [i.get("value") for i in page.iter(f"{PAGE_NS}MetadataItem")]
            assert f"kraken {HOSTILE}" in values
        assert "<model>" not in text  # escaped, never markup
        agents = [a.findtext(f"{METS_NS}name") for a in _xml(members["METS.xml"]).iter(f"{METS_NS}agent")]
        assert f"kraken model {HOSTILE}" in agents
        folders = {n.split("/")[1] for n in members if n.startswith("models/")}
        assert any(f.startswith("4_") for f in folders)  # the hostile model travels with the archive


def test_models_used_and_all_in_document_and_bulk_archives(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--corpus", str(demo_corpus)]
    plain = _zip_members(_export(capsys, store, tmp_path / "none.zip", "--document", "2"))
    assert not [n for n in plain if n.startswith("models/")]  # default: none
    used = _export(capsys, store, tmp_path / "used.zip", "--document", "2", "--models", "used")
    again = _export(capsys, store, tmp_path / "used-again.zip", "--document", "2", "--models", "used")
    assert used.read_bytes() == again.read_bytes()  # reproducible, models included
    members = _zip_members(used)
    assert sorted(n for n in members if n.startswith("models/")) == [
        "models/1_blla/blla.mlmodel", "models/1_blla/model.json",
        "models/3_catmus_medieval_15/catmus-medieval-15.mlmodel", "models/3_catmus_medieval_15/model.json"]
    every = _zip_members(_export(capsys, store, tmp_path / "all.zip", "--document", "2", "--models", "all"))
    assert "models/2_catmus_medieval_10/catmus-medieval-10.mlmodel" in every
    code, _, err = cli(capsys, "export", *store, "--document", "2", "--format", "text", "--models", "used",
                       "-o", str(tmp_path / "t.txt"), "--registry", str(tmp_path / "r.sqlite"))
    assert code == 2 and "models = 'used'" in err and not (tmp_path / "t.txt").exists()

    job = tmp_path / "job.toml"
    job.write_text(f'name = "bulk"\ncorpus = "{demo_corpus}"\nregistry = "{tmp_path / "r.sqlite"}"\n'
                   f'[archive]\ndirectory = "{tmp_path / "bulk"}"\nmode = "bulk"\n'
                   '[[outputs]]\nformat = "page"\nmodels = "used"\n', encoding="utf-8")
    code, _, err = cli(capsys, "-q", "run", str(job))
    assert code == 0, err
    (archive,) = (tmp_path / "bulk").glob("*.zip")
    bulk = _zip_members(archive)
    folders = sorted({n.split("/")[1] for n in bulk if n.startswith("models/")})
    assert folders == ["1_blla", "3_catmus_medieval_15"]
    media = demo_corpus.with_suffix(".media")
    assert bulk["models/3_catmus_medieval_15/catmus-medieval-15.mlmodel"] == (
        media / "models/c07e52d9/catmus-medieval-15.mlmodel").read_bytes()
    mets = [n for n in bulk if n.endswith("METS.xml")]
    assert len(mets) == 2 and all(b"<metsHdr>" in bulk[n] for n in mets)


def test_job_reports_a_skipped_model_file(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, media = _corpus_copy(demo_corpus, tmp_path)
    (media / "models/3f2a9c1e/blla.mlmodel").unlink()
    job = tmp_path / "job.toml"
    job.write_text(f'name = "nightly"\ncorpus = "{corpus}"\n[archive]\ndirectory = "{tmp_path / "out"}"\n'
                   '[[outputs]]\nformat = "alto"\nmodels = "used"\non_error = "skip"\n', encoding="utf-8")
    code, _, err = cli(capsys, "-q", "run", str(job))
    assert code == 1, err
    report = json.loads((tmp_path / "out" / "nightly-report.json").read_text())
    assert len(report["exported"]) == 2 and report["failed"] == []
    for entry in report["exported"]:
        assert entry["skipped_images"] == []
        assert [(m["model"], m["name"]) for m in entry["skipped_models"]] == [(1, "blla")]
        assert str(media / "models/3f2a9c1e/blla.mlmodel") in entry["skipped_models"][0]["error"]
