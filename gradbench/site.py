"""``gradbench report --html DIR``: a static site of the run records, viewed from disk with no server and
no network (no CDN: the script and the style sheet are copied into DIR).

    DIR/index.html            the leaderboard's tables, their plots, the legend; a filter box
    DIR/runs.html             every run (any status, tuning grids too), one row each
    DIR/runs/<run_id>.html    one run: what ran, its config, metrics, gradient checkpoints, cost,
                              provenance and its history as inline SVG curves
    DIR/plots/*.png           plots.py's figures of each table
    DIR/claims/<name>/        each --claims markdown file as HTML, with the figures it links to

A view of the results layer: the tables' cells, their order, bold (best and tied) and the notes are the
leaderboard's own (``results.decide`` and the leaderboard's row cells), never recomputed here. Every
string from a record is escaped (``html.escape``): a record is untrusted input. Claims files are rendered
by the ``markdown`` package (the optional extra ``gradbench[html]``) with raw HTML turned off and only
relative images and http(s)/mailto/relative links kept. Tables sort when a header is clicked and a text box
filters their rows (``assets/site.js``, a few lines of plain JavaScript).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import posixpath
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gradbench.errors import UsageError
from gradbench.leaderboard import (
    LEGEND,
    LEGEND_BIAS,
    LEGEND_GRADIENT,
    LEGEND_PATHS,
    _headers,
    _row_cells,
    footnotes,
)
from gradbench.records import atomic_write_text
from gradbench.results import PATH_NAMES, Record, Relabel, RunSet, TableKey, TableStats, decide, fmt
from gradbench.results.header import header

MARKER = ".gradbench-report"  # in a folder this command made: it may rebuild it
ASSETS = ("site.css", "site.js")
MISSING_EXTRA = "--claims needs the markdown package: pip install 'gradbench[html]'"
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def esc(value: Any) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe in an attribute)."""
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------------- small renderers


def _inline(text: str) -> str:
    """The leaderboard's own prose (legend, header) as HTML: escaped, then `code` and **bold**."""
    out = esc(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _blocks(text: str) -> str:
    """Paragraphs and ``- `` bullet lists of the leaderboard's header, as HTML."""
    parts = []
    for para in text.split("\n\n"):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if lines and all(ln.startswith("- ") for ln in lines):
            items = "".join(f"<li>{_inline(ln[2:])}</li>" for ln in lines)
            parts.append(f"<ul>{items}</ul>")
        elif lines:
            parts.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(parts)


def _cell(text: str) -> str:
    """A leaderboard cell (markdown: ``\\|`` escaped, ``**bold**`` for best and tied) as HTML."""
    text = text.replace("\\|", "|")
    if len(text) > 4 and text.startswith("**") and text.endswith("**"):
        return f"<strong>{esc(text[2:-2])}</strong>"
    return esc(text)


def value_text(value: Any) -> str:
    """A record's value for display: numbers to 6 significant digits, lists and objects as JSON."""
    if value is None:
        return fmt.MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(value_text(v))}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>' if body else "<p class=\"note\">none</p>"


def grid(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "sortable filterable",
         table_id: str = "") -> str:
    """A table of already-escaped cells under escaped headers."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f'<table class="{cls}"{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def svg_curve(title: str, points: Sequence[tuple[float, float]], xlabel: str = "step") -> str:
    """An inline SVG line chart of (x, y) points, with its range written on the axes."""
    w, h, left, right, top, bottom = 380, 190, 64, 14, 24, 34
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    if y1 <= y0:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="#0b57d0"/>' for x, y in points
                   if len(points) <= 60)
    axes = (f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#888"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#888"/>')
    text = (f'<text x="{w / 2}" y="15" text-anchor="middle" font-size="12">{esc(title)}</text>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{esc(f"{y1:.4g}")}</text>'
            f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end" font-size="10">{esc(f"{y0:.4g}")}</text>'
            f'<text x="{left}" y="{h - bottom + 14}" text-anchor="middle" font-size="10">{esc(f"{x0:g}")}</text>'
            f'<text x="{w - right}" y="{h - bottom + 14}" text-anchor="end" font-size="10">{esc(f"{x1:g}")}</text>'
            f'<text x="{(left + w - right) / 2}" y="{h - 6}" text-anchor="middle" font-size="10">{esc(xlabel)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{esc(title)}">{axes}<polyline points="{line}" fill="none" stroke="#0b57d0" '
            f'stroke-width="1.5"/>{dots}{text}</svg>')


def page(title: str, body: str, depth: int = 0, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A whole page: the shared style sheet and script, relative to a page ``depth`` folders below DIR."""
    up = "../" * depth
    links = "".join(f'<a href="{esc(up + href)}">{esc(text)}</a>' for href, text in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'\">"
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<link rel=\"stylesheet\" href=\"{up}site.css\"></head>\n"
            f"<body><header><nav>{links}</nav></header><main>\n{body}\n</main>"
            f"<script src=\"{up}site.js\"></script></body></html>\n")


FILTER = ('<div class="filter"><input id="filter" type="search" placeholder="filter rows (estimator, task, '
          'run id...)" aria-label="filter rows"> <span id="filter-count" class="note"></span></div>')


# ----------------------------------------------------------------------------------- the site


@dataclass
class Site:
    """What ``build`` wrote."""

    index: Path
    runs: int = 0
    tables: int = 0
    plots: int = 0
    claims: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a claims figure that could not be found
    files: list[Path] = field(default_factory=list)  # every file written


def _page_names(records: Iterable[Record]) -> dict[str, str]:
    """record file -> its page's name (the run id when it is a safe file name, else a hash of it; a second
    record of one id gets a suffix)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for r in records:
        base = r.run_id if SAFE_NAME.fullmatch(r.run_id) else "run-" + hashlib.sha1(r.run_id.encode()).hexdigest()[:12]
        name, i = base, 2
        while name in used:
            name, i = f"{base}-{i}", i + 1
        used.add(name)
        names[r.path] = name
    return names


def _prepare(out: Path) -> None:
    """Refuse a folder this command did not make (someone's files); in one it made, remove the files its
    manifest (the marker file) lists, and only those: anything else there is left alone."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--html {os.fspath(out)!r} is a file; pass a folder (created if missing)")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.exists():
        raise UsageError(f"--html {os.fspath(out)!r} is not empty and was not made by gradbench report; pass a new "
                         f"or empty folder")
    if marker.exists():
        root = out.resolve()
        for line in marker.read_text(encoding="utf-8").splitlines()[1:]:
            path = (out / line).resolve()
            if line and path.is_relative_to(root) and path.is_file():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, [])


def _write_marker(out: Path, files: Iterable[Path]) -> None:
    """The marker: a first line saying what made the folder, then every file it wrote (relative to it)."""
    listed = "".join(f"{f.relative_to(out).as_posix()}\n" for f in files)
    atomic_write_text(out / MARKER, f"# made by gradbench report --html, which rebuilds these files:\n{listed}")


def _write(site: Site, path: Path, text: str) -> None:
    atomic_write_text(path, text)
    site.files.append(path)


def _nav(claims: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("index.html", "leaderboard"), ("runs.html", "all runs"), *claims]


def _table_section(table: TableStats, runs: Mapping[str, Mapping[Any, Record]], pages: Mapping[str, str],
                   notes: Sequence[str], plots: Sequence[Path], out: Path) -> str:
    """One leaderboard table: heading, notes, the leaderboard's rows (plus a column of links to each seed's
    run page), the n/a line and the table's plots."""
    key = table.key
    main = table.main_metric
    main_text = (main.column if main else table.main) or "none"
    meta = (f"preset: {key.preset}; budget: {key.budget_text}; node: {', '.join(table.nodes) or '?'}; "
            f"main metric: {main_text}")
    rows = []
    for label in table.order:
        if table.rows[label].unsupported:
            continue
        seeds = runs.get(label, {})
        links = ", ".join(
            f'<a href="runs/{esc(pages[r.path])}.html" class="status-{esc(r.status)}">{esc(seed)}'
            + ("" if r.ok else f" ({esc(r.status)})") + "</a>"
            for seed, r in sorted(seeds.items(), key=lambda kv: str(kv[0])) if r.path in pages)
        rows.append([_cell(c) for c in _row_cells(table, label)] + [links])
    parts = [f'<section id="{esc(key.slug)}"><h2>{esc(key.label)}</h2><p class="meta">{esc(meta)}</p>']
    parts += [f'<p class="note">{esc(" ".join(notes))}</p>'] if notes else []
    parts.append(grid(_headers(table) + ["runs (seed)"], rows))
    parts += [f'<p class="note">{esc(line)}</p>' for line in footnotes(table)]  # outlier seeds, float32 flags
    na = [label for label in table.order if table.rows[label].unsupported]
    if na:
        parts.append(f'<p class="note">n/a (cannot run a {esc(", ".join(table.nodes) or "?")} node): '
                     f'{esc(", ".join(na))}</p>')
    for png in plots:
        rel = png.relative_to(out).as_posix()
        title = png.stem.split("--", 1)[-1].replace("_", " ")
        parts.append(f'<figure><img src="{esc(rel)}" alt="{esc(title)}" loading="lazy">'
                     f'<figcaption>{esc(title)}</figcaption></figure>')
    parts.append("</section>")
    return "\n".join(parts)


def _index(runs: RunSet, tables: Mapping[TableKey, TableStats], pages: Mapping[str, str],
           plots: Mapping[TableKey, list[Path]], out: Path, nav: Sequence[tuple[str, str]],
           versions: Mapping[str, str] | None = None) -> str:
    grouped = runs.tables()
    body = ["<h1>gradbench leaderboard</h1>",
            _blocks(header(runs.records, runs.problems, runs.set_aside, versions))]
    if len(tables) > 1:
        body.append('<nav class="toc"><p>Tables:</p><ul>' + "".join(
            f'<li><a href="#{esc(key.slug)}">{esc(key.label)}</a> <span class="note">({esc(key.preset)}; '
            f'{esc(key.budget_text)})</span></li>' for key in tables) + "</ul></nav>")
    body.append(FILTER)
    body += [_table_section(t, {label: row.records for label, row in grouped[key].items()}, pages,
                            runs.notes.get(key, []), plots.get(key, []), out) for key, t in tables.items()]
    if not tables:
        body.append("<p>No runs recorded yet.</p>")
    for key in sorted(set(runs.notes) - set(tables)):  # a tuning with nothing to report still says so
        body.append(f"<section><h2>{esc(key.label)}</h2><p class=\"note\">{esc(' '.join(runs.notes[key]))}</p>"
                    "</section>")
    if tables:
        legend = [LEGEND]
        legend += [LEGEND_GRADIENT] if any(t.has_gradient for t in tables.values()) else []
        legend += [LEGEND_BIAS] if any(t.has_bias for t in tables.values()) else []
        legend += [LEGEND_PATHS] if not all(t.eager_only for t in tables.values()) else []
        body.append(f'<h2>How to read the tables</h2><p class="legend">{_inline(" ".join(legend))}</p>')
    return page("gradbench leaderboard", "\n".join(body), 0, nav)


def _runs_page(records: Sequence[Record], pages: Mapping[str, str], nav: Sequence[tuple[str, str]]) -> str:
    headers = ["run id", "task", "estimator", "preset", "budget", "seed", "status", "main metric", "value",
               "ended (UTC)"]
    rows = []
    for r in records:
        main = r.main_metric
        value = r.metric(main) if main else None
        rows.append([f'<a href="runs/{esc(pages[r.path])}.html" class="mono">{esc(r.run_id)}</a>', esc(r.task_label),
                     esc(r.stored_label), esc(r.preset), esc(r.table.budget_text), esc(r.seed),
                     f'<span class="status-{esc(r.status)}">{esc(r.status)}</span>', esc(main or fmt.MISSING),
                     esc(fmt.MISSING if value is None else f"{value:.6g}"), esc(r.end_utc or fmt.MISSING)])
    body = f"<h1>All runs ({len(records)})</h1>\n{FILTER}\n{grid(headers, rows, table_id='runs')}"
    return page("gradbench: all runs", body, 0, nav)


def _columns(sections: Sequence[tuple[str, str]]) -> str:
    """Titled blocks side by side (wrapping on a narrow window)."""
    return '<div class="cols">' + "".join(f"<div><h2>{esc(t)}</h2>{html}</div>" for t, html in sections) + "</div>"


def _checkpoints(record: Record) -> str:
    points = record.checkpoints
    if not points:
        return '<p class="note">not measured</p>'
    names = list(dict.fromkeys(k for p in points for k in p.fields))
    rows = [[esc(name)] + [esc(value_text(p.fields.get(name))) for p in points] for name in names]
    return grid(["field"] + [str(p.name) for p in points], rows, cls="kv")


def _curves(record: Record, runs_dir: Path) -> str:
    """Every numeric history column against step, one inline SVG each."""
    history = record.history(runs_dir)
    keys = list(dict.fromkeys(k for row in history for k in row if k not in ("step", "seconds")))
    figures = []
    for key in keys:
        points = [(s, v) for s, _, v in record.series(runs_dir, key)]
        if points and all(math.isfinite(v) for _, v in points):
            figures.append(svg_curve(key, points))
    if not figures:
        return '<p class="note">no history recorded</p>'
    return '<div class="curves">' + "".join(figures) + "</div>"


def _run_page(record: Record, runs_dir: Path, tables: Mapping[TableKey, TableStats],
              nav: Sequence[tuple[str, str]]) -> str:
    r = record
    prov = r.provenance
    status = f'<span class="status-{esc(r.status)}">{esc(r.status)}</span>'
    body = [f'<h1>run <span class="mono" id="run-id">{esc(r.run_id)}</span> ({status})</h1>']
    if r.error:
        body.append(f"<h2>Error</h2><pre>{esc(r.error)}</pre>")
    if r.table in tables:
        body.append(f'<p>Leaderboard table: <a href="../index.html#{esc(r.table.slug)}">{esc(r.table.label)} '
                    f'({esc(r.preset)}; {esc(r.table.budget_text)})</a></p>')
    what = [("task", r.task), ("task label", r.task_label), ("task version", r.task_version),
            ("node", f"{r.node_kind} {value_text(r.node_settings)}"), ("estimator", r.estimator),
            ("estimator label", r.stored_label), ("estimator version", r.estimator_version),
            ("unbiased", r.unbiased), ("preset", r.preset), ("seed", r.seed), ("seed batch", r.seed_batch),
            ("budget", r.table.budget_text), ("eval every", r.eval_every), ("main metric", r.main_metric),
            ("execution path", PATH_NAMES.get(r.accel_path, r.accel_path)), ("data fingerprint", r.data_fingerprint)]
    directions = r.metric_directions(validation=True)
    metrics = [(f"{name}{fmt.arrow(hib)}", r.metric(name)) for name, hib in directions.items()]
    provenance = ((k, " ".join(v) if isinstance(v, tuple) else v) for k, v in vars(prov).items())
    body += [_columns([("What ran", _kv_table(what)), ("Task config", _kv_table(r.task_config.items())),
                       ("Estimator config", _kv_table((r.estimator_config or {}).items())),
                       ("Metrics", _kv_table(metrics))]),
             "<h2>Curves</h2>", _curves(r, runs_dir),
             "<h2>Gradient checkpoints</h2>", _checkpoints(r),
             _columns([("Cost", _kv_table(r.cost.items())), ("Provenance", _kv_table(provenance))])]
    return page(f"gradbench run {r.run_id}", "\n".join(body), 1, nav)


def build(runs_dir: str | Path, out_dir: str | Path, claims: Sequence[str | Path] = (),
          unsupported: Mapping[str, Iterable[str]] | None = None, relabel: Relabel | None = None,
          versions: Mapping[str, str] | None = None) -> Site:
    """Write the site for the records under ``runs_dir`` into ``out_dir``; the tables are the leaderboard's
    (``RunSet.load`` with the same ``relabel`` and ``unsupported``), the run pages cover every record."""
    from gradbench.plots import plot_table

    runs_dir, out = Path(runs_dir), Path(out_dir)
    claims = [Path(c) for c in claims]
    for c in claims:
        if not c.is_file():
            raise UsageError(f"--claims {os.fspath(c)!r} is not a file")
    if claims:
        _markdown()  # the extra is missing: say so before writing anything
    _prepare(out)
    every = RunSet.collect(runs_dir)
    runs = RunSet.load(runs_dir, relabel)
    pages = _page_names(every)
    tables = decide(runs, unsupported)
    grouped = runs.tables()
    plots = {key: plot_table(runs_dir, key, grouped[key], folder=out / "plots") for key in tables}
    site = Site(out / "index.html", runs=len(every), tables=len(tables), plots=sum(map(len, plots.values())),
                problems=list(runs.problems))
    site.files += [p for written in plots.values() for p in written]
    for name in ASSETS:
        _write(site, out / name, resources.files("gradbench").joinpath("assets", name).read_text("utf-8"))
    claim_pages = _claim_names(claims)
    nav = _nav([(f"claims/{name}/index.html", f"claims: {path.name}") for path, name in claim_pages])
    for path, name in claim_pages:
        site.claims.append(_write_claims(site, path, out / "claims" / name, nav))
    _write(site, site.index, _index(runs, tables, pages, plots, out, nav, versions))
    _write(site, out / "runs.html", _runs_page(every.records, pages, nav))
    for r in every:
        _write(site, out / "runs" / f"{pages[r.path]}.html", _run_page(r, runs_dir, tables, nav))
    _write_marker(out, site.files)
    return site


# ----------------------------------------------------------------------------------- claims (markdown)


def _claim_names(claims: Sequence[Path]) -> list[tuple[Path, str]]:
    out, used = [], set()
    for path in claims:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or "claims"
        name, i = base, 2
        while name in used:
            name, i = f"{base}-{i}", i + 1
        used.add(name)
        out.append((path, name))
    return out


def _markdown() -> Any:
    try:
        import markdown
    except ImportError:
        raise UsageError(MISSING_EXTRA) from None
    return markdown


SAFE_SCHEMES = {"http", "https", "mailto"}


def _local(url: str) -> str | None:
    """A relative URL's path, normalised, when it stays below its page's folder; else None."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or url.startswith("/"):
        return None
    path = posixpath.normpath(unquote(parts.path))
    return None if path.startswith("..") or path.startswith("/") else path


def render_markdown(text: str) -> tuple[str, list[str]]:
    """(HTML, the relative image paths it shows) of a markdown file: tables, fenced code and heading anchors;
    raw HTML is shown as text, links keep only http(s), mailto and relative targets, images only relative
    paths below the file's folder (others are dropped, their alt text kept)."""
    markdown = _markdown()
    from markdown.extensions import Extension
    from markdown.treeprocessors import Treeprocessor

    images: list[str] = []

    class Urls(Treeprocessor):
        def run(self, root: Any) -> None:
            for el in root.iter():
                href = el.get("href")
                if href is not None and not (href.startswith("#") or _local(href) is not None
                                             or urlsplit(href).scheme in SAFE_SCHEMES):
                    del el.attrib["href"]
                if el.tag == "img":
                    path = _local(el.get("src", ""))
                    if path is None:
                        el.tag, el.text = "span", el.get("alt", "")
                        el.attrib.clear()
                    else:
                        el.set("src", path)
                        images.append(path)

    class NoRawHtml(Extension):
        def extendMarkdown(self, md: Any) -> None:  # noqa: N802 (markdown's API)
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")
            md.treeprocessors.register(Urls(md), "gradbench_urls", 0)

    md = markdown.Markdown(extensions=["tables", "fenced_code", "toc", NoRawHtml()],
                            extension_configs={"tables": {"use_align_attribute": True}})
    return md.convert(text), images


def _write_claims(site: Site, path: Path, folder: Path, nav: Sequence[tuple[str, str]]) -> Path:
    """One claims file as ``folder/index.html``, with the figures it shows copied beside it."""
    body, images = render_markdown(path.read_text(encoding="utf-8"))
    for rel in images:
        src = path.parent / rel
        if src.is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / rel)
            site.files.append(folder / rel)
        else:
            site.notes.append(f"{path}: figure {rel} not found")
    out = folder / "index.html"
    _write(site, out, page(f"gradbench: {path.name}", f'<div class="claims">{body}</div>', 2, nav))
    return out
