"""``pipeline serve`` as users run it: a real uvicorn server on a free loopback port.

- an on-the-fly export of a large document streams while it is made (the export is still
  running after the first bytes arrived), keeps no file, is the same archive ``verify`` accepts,
  and stops when the client hangs up; the per-user limit counts it;
- the end-to-end walk in Debian's Chromium driven by Playwright: log in, open the document page,
  shift-click a range of parts, export ALTO with images, wait for the Download link, download,
  and check the archive with ``pipeline verify``.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import httpx
import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from tests.serve_helpers import make_users, uvicorn_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One document of 80 pages with 1240x1754 JPEG images (~25 MB of images)."""
    path = tmp_path_factory.mktemp("big") / "big.sqlite"
    build_demo(path, documents=1, parts=80, lines=20)
    return path


def test_on_the_fly_export_streams_and_stops_with_the_client(big_corpus: Path, tmp_path: Path) -> None:
    registry = tmp_path / "r.sqlite"
    token = make_users(registry, "alice")["alice"]
    headers = {"Authorization": f"Bearer {token}"}
    data = tmp_path / "data"
    with uvicorn_server(big_corpus, registry, data, "--max-exports", "1") as (url, _):
        export = f"{url}/api/documents/1/export?format=alto&images=true"
        with httpx.Client(headers=headers, timeout=60) as client:
            out = tmp_path / "streamed.zip"
            with client.stream("GET", export) as response, open(out, "wb") as fh:
                assert response.status_code == 200
                assert response.headers.get("transfer-encoding") == "chunked"
                assert "content-length" not in response.headers
                chunks = response.iter_raw()
                fh.write(next(chunks))
                # the first bytes are here and the export still runs: a second one is refused
                busy = client.get(export)
                assert busy.status_code == 429, busy.text
                assert "at most 1" in busy.json()["error"]
                for chunk in chunks:
                    fh.write(chunk)
            assert out.stat().st_size > 20_000_000
            assert main(["verify", str(out)]) == 0
            with zipfile.ZipFile(out) as archive:
                assert sum(name.endswith(".jpg") for name in archive.namelist()) == 80
            assert not any(data.rglob("*.zip")) and not any(data.rglob(".*"))  # nothing kept
            # a client that hangs up stops its export: the next one is admitted
            with client.stream("GET", export) as response:
                next(response.iter_raw())
            for _ in range(100):
                again = client.get(f"{url}/api/documents/1/export?format=text")
                if again.status_code == 200:
                    break
                assert again.status_code == 429
                time.sleep(0.1)
            assert again.status_code == 200 and again.text.strip()


def test_browser_exports_a_shift_selected_range(demo_corpus: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    registry = tmp_path / "r.sqlite"
    token = make_users(registry, "alice")["alice"]
    with uvicorn_server(demo_corpus, registry, tmp_path / "data") as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(url + "/documents/1")
            assert page.url.endswith("/login")
            page.fill("input[name=token]", token)
            page.click("form[action='/login'] button")
            page.wait_for_url(url + "/")
            page.click("a[href='/documents/1']")
            boxes = page.locator("input.part")
            assert boxes.count() == 4
            expect(page.locator("img").first).to_have_js_property("complete", True)
            boxes.nth(0).click()
            boxes.nth(2).click(modifiers=["Shift"])
            assert [boxes.nth(i).is_checked() for i in range(4)] == [True, True, True, False]
            regions = page.locator("input[name=region]")
            assert regions.count() == 7 and all(regions.nth(i).is_checked() for i in range(7))
            assert "(Undefined region type)" in page.content() and "(Orphan lines)" in page.content()
            page.check("input[name=format][value=alto]")
            page.check("input[name=images]")
            page.click("#export-button")
            link = page.locator("#download")
            expect(link).to_be_visible(timeout=60_000)
            with page.expect_download() as info:
                link.click()
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
            page.goto(url + "/files")
            assert saved.name in page.content()
        finally:
            browser.close()
    assert main(["verify", str(saved)]) == 0
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
    assert sum(n.endswith(".xml") and n != "METS.xml" for n in names) == 3
    assert sum(n.endswith(".jpg") for n in names) == 3
