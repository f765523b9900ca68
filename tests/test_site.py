"""gradbench report --html: a static site of the records. The tables are the leaderboard's own cells; every
string from a record is escaped; claims files render from markdown with raw HTML shown as text.

The site is also opened in a real headless browser (Debian's chromium driven through its chromedriver by
Selenium, no driver download): the index loads without console errors, a click on a header sorts the
table, the filter box hides rows, and a run link opens that run's page. Without the browser or Selenium
the browser test skips, except in CI (CI set: .ci/run installs both), where it fails."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from gradbench import leaderboard
from gradbench.cli import main
from gradbench.results import RunSet, decide
from gradbench.site import esc, render_markdown

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    for est in ("reinforce", "arm"):
        assert main(["run", "--task", "toy", "--estimator", est, "--seeds", "0-1", "--steps", "20",
                     "--eval-every", "10", "--no-progress", "--runs", str(folder)]) == 0
    return folder


CLAIMS = """# Claims

| claim | verdict |
|---|---:|
| sort-gain | **contradicted** |

<script>alert("raw html")</script>

A [bad link](javascript:alert(1)), a [good one](https://example.org) and ![a curve](figs/curve.png).
"""


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    claims = tmp_path_factory.mktemp("claims")
    (claims / "figs").mkdir()
    shutil.copyfile(next(runs.glob("*/*/*.json")), claims / "figs" / "curve.png")  # any file stands in
    (claims / "claims.md").write_text(CLAIMS)
    assert main(["report", "--runs", str(runs), "--html", str(out), "--claims", str(claims / "claims.md")]) == 0
    return out


def test_site_pages(site, runs):
    index = (site / "index.html").read_text()
    records = list(runs.glob("*/*/*.json"))
    assert len(records) == 4
    for path in records:
        run_id = path.stem
        assert f'href="runs/{run_id}.html"' in index
        page = (site / "runs" / f"{run_id}.html").read_text()
        assert f'id="run-id">{run_id}<' in page and "<svg" in page  # its curves, inline
    assert len(list((site / "plots").glob("*.png"))) == 3
    for name in ("site.js", "site.css", "runs.html", "claims/claims/index.html", "claims/claims/figs/curve.png"):
        assert (site / name).is_file(), name
    assert "http://" not in index.replace("http://www.w3.org/2000/svg", "") and "https://" not in index


def test_tables_are_the_leaderboards(site, runs):
    """The cells are the leaderboard's, bold where it bolds, in its row order."""
    index = (site / "index.html").read_text()
    (table,) = decide(RunSet.load(runs)).values()
    for label in table.order:
        for cell in leaderboard._row_cells(table, label):
            text = cell.replace("\\|", "|")
            html = f"<strong>{esc(text[2:-2])}</strong>" if text.startswith("**") else esc(text)
            assert f"<td>{html}</td>" in index
    positions = [index.index(f"<td>{label}</td>") for label in table.order]
    assert positions == sorted(positions)
    for header in leaderboard._headers(table):
        assert f"<th>{esc(header)}</th>" in index


def test_record_strings_are_escaped(runs, tmp_path):
    evil = tmp_path / "runs"
    shutil.copytree(runs, evil)
    path = next(evil.glob("*/*/*.json"))
    record = json.loads(path.read_text())
    record["estimator"]["label"] = "<script>alert('label')</script>"
    record["error"] = "<img src=x onerror=alert(1)>"
    record["provenance"]["hostname"] = '"><b>host</b>'
    path.write_text(json.dumps(record))
    out = tmp_path / "html"
    assert main(["report", "--runs", str(evil), "--html", str(out)]) == 0
    for page in [out / "index.html", out / "runs.html", *(out / "runs").glob("*.html")]:
        text = page.read_text()
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>host" not in text
    page = (out / "runs" / f"{record['run_id']}.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&quot;&gt;&lt;b&gt;host" in page


def test_claims_markdown_is_rendered_safely():
    if not os.environ.get("CI"):
        pytest.importorskip("markdown", reason="the html extra is not installed: pip install 'gradbench[html]'")
    html, images = render_markdown(CLAIMS)
    assert "<table>" in html and "<strong>contradicted</strong>" in html and 'align="right"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html.replace(">bad link<", "") and 'href="https://example.org"' in html
    assert images == ["figs/curve.png"]
    html, images = render_markdown("![up](../../etc/x.png) ![far](https://example.org/x.png)")
    assert images == [] and "<img" not in html


def test_report_refusals(runs, tmp_path, monkeypatch, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert main(["report", "--runs", str(runs), "--html", str(theirs)]) == 2
    assert "not empty" in capsys.readouterr().err and (theirs / "notes.txt").read_text() == "mine"
    claims = tmp_path / "c.md"
    claims.write_text("# c\n")
    monkeypatch.setitem(sys.modules, "markdown", None)
    assert main(["report", "--runs", str(runs), "--html", str(tmp_path / "new"), "--claims", str(claims)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'gradbench[html]'" in err and not (tmp_path / "new").exists()


def test_rebuild_replaces_only_its_own_files(runs, tmp_path, capsys):
    out = tmp_path / "html"
    assert main(["report", "--runs", str(runs), "--html", str(out)]) == 0
    assert len(list((out / "runs").glob("*.html"))) == 4
    fewer = tmp_path / "fewer"
    shutil.copytree(runs / "toy" / "reinforce", fewer / "toy" / "reinforce")
    mine = out / "runs" / "notes.txt"
    mine.write_text("someone's")
    assert main(["report", "--runs", str(fewer), "--html", str(out)]) == 0
    assert "2 run pages" in capsys.readouterr().out
    assert {p.stem for p in (out / "runs").glob("*.html")} == {p.stem for p in fewer.glob("*/*/*.json")}
    assert mine.read_text() == "someone's"  # not in the manifest: left alone


# ---------------------------------------------------------------------------------- in a browser


def _browser():
    """A headless chromium through Debian's chromedriver; skip without them, fail in CI."""
    binary = next((b for b in CHROMIUM if Path(b).exists()), None)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("selenium is not installed: pip install 'gradbench[browser]'")
    if binary is None or not Path(CHROMEDRIVER).exists():
        msg = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a driver path: no download


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _column(table, i: int) -> list[str]:
    return [tr.find_elements("tag name", "td")[i].text for tr in table.find_elements("css selector", "tbody tr")]


def _wait(condition, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_site_in_a_browser(site, runs):
    driver = _browser()
    try:
        driver.get((site / "index.html").as_uri())
        assert driver.title == "gradbench leaderboard"
        assert _errors(driver) == []
        table = driver.find_element("css selector", "table.sortable")
        headers = table.find_elements("css selector", "thead th")
        names = [h.text for h in headers]

        # click a header: the column sorts ascending, a second click descending
        col = names.index("estimator")
        before = _column(table, col)
        assert sorted(before) == ["arm", "reinforce"]
        headers[col].click()
        assert _column(table, col) == sorted(before)
        assert headers[col].get_attribute("aria-sort") == "ascending"
        headers[col].click()
        assert _column(table, col) == sorted(before, reverse=True)
        # a numeric column sorts by the numbers its cells start with
        gap = next(i for i, n in enumerate(names) if n.startswith("gap"))
        headers[gap].click()
        values = [float(c.split()[0]) for c in _column(table, gap)]
        assert values == sorted(values)

        # the filter box hides the rows that do not contain its text
        rows = table.find_elements("css selector", "tbody tr")
        box = driver.find_element("id", "filter")
        box.send_keys("reinforce")
        _wait(lambda: sum(r.is_displayed() for r in rows) == 1)
        (shown,) = [r for r in rows if r.is_displayed()]
        assert shown.find_elements("tag name", "td")[0].text == "reinforce"
        box.clear()
        box.send_keys(" ")  # an input event with an empty query shows every row again
        _wait(lambda: all(r.is_displayed() for r in rows))

        # a run link opens that run's page
        link = table.find_element("css selector", 'a[href^="runs/"]')
        run_id = Path(link.get_attribute("href")).stem
        link.click()
        _wait(lambda: driver.current_url.endswith(f"runs/{run_id}.html"))
        assert driver.find_element("id", "run-id").text == run_id
        assert run_id in {p.stem for p in runs.glob("*/*/*.json")}
        assert _errors(driver) == []

        # the claims page and the list of every run load cleanly too
        for page in ("claims/claims/index.html", "runs.html"):
            driver.get((site / page).as_uri())
            assert _errors(driver) == []
        assert len(driver.find_elements("css selector", "#runs tbody tr")) == 4
    finally:
        driver.quit()
