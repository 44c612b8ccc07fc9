"""Render a run directory into ``report.md`` and a self-contained ``report.html``, and a tour into ``index.html``.

Everything is rendered from the files in the run directory (``config.json``, ``env.json``, ``summary.json``,
``status.json``, ``report.json``, ``metrics.jsonl``), so ``kexue report RUN_DIR`` can re-render at any time.
The HTML report embeds its figures (base64), so it can be mailed or moved on its own; the tour index links the
figures in place.
"""

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from kexue._fs import read_jsonl, torn_tail, write_text_atomic
from kexue.errors import KexueError

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.5}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:.3em .6em;
text-align:left}th{background:#f5f5f7}code{background:#f2f2f2;padding:0 .25em;border-radius:3px}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.ok{color:#0a7d28;font-weight:600}.bad{color:#c0262d;font-weight:600}.na{color:#888}
.status{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.85em;background:#eee}
.status.done{background:#dff3e4}.status.failed{background:#fbe0e0}.status.running{background:#fff4d6}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:8px;padding:.8em 1em;background:#fff}
.card h2{font-size:1.05em;border:none;margin:.2em 0}.card img{width:100%;border:1px solid #eee}
.card table{width:100%}.muted{color:#777;font-size:.9em}pre{background:#f6f6f6;padding:.6em;overflow:auto}
"""


# ``status.json`` of every run directory kexue creates carries this ``format`` field: ``kexue report`` re-renders
# (overwrites report.md / report.html in) only folders that have it, never a folder kexue did not create.
RUN_FORMAT = "kexue-run/1"


def _read_json(path: Path, default: Any) -> Any:
    """The JSON in ``path`` (``default`` if there is none), which must be of ``default``'s type."""
    if not path.exists():
        return default
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise KexueError(f"{path} is not valid JSON ({err}); restore it or start a new run") from None
    if not isinstance(value, type(default)):
        raise KexueError(f"{path} holds a JSON {type(value).__name__}, expected a {type(default).__name__}; "
                         "restore it or start a new run")
    return value


def _inline_html(text: str) -> str:
    """Escape, then render ``code``, **bold**, *emphasis* and [links](url)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*", r"<i>\1</i>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _met_mark(entry: dict) -> tuple[str, str]:
    """(text, css class) for whether a summary entry met its bar."""
    if entry.get("met") is None:
        return "no bar", "na"
    return ("met", "ok") if entry["met"] else ("missed", "bad")


def _summary_rows(summary: dict) -> list[list[str]]:
    rows = []
    for name, e in summary.items():
        arrow = "≥" if e.get("direction") == "max" else "≤"
        bar = f"{arrow} {_fmt(e['bar'])}" if e.get("bar") is not None else "–"
        rows.append([name, _fmt(e.get("value")), bar, _met_mark(e)[0], _fmt(e.get("paper")), e.get("note", "")])
    return rows


_SUMMARY_HEADER = ["metric", "value", "bar", "", "paper", "note"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = classes[i][j] if classes else ""
            cells.append(f'<td class="{cls}">{_inline_html(str(cell))}</td>' if cls else
                         f"<td>{_inline_html(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary_html(summary: dict) -> str:
    rows = _summary_rows(summary)
    classes = [["", "", "", _met_mark(e)[1], "", "muted"] for e in summary.values()]
    return _html_table(_SUMMARY_HEADER, rows, classes)


def read_status(run_dir: str | Path) -> dict:
    """``status.json`` of a run directory kexue created.

    Raises:
        KexueError: ``run_dir`` has no ``config.json``, or no ``status.json`` with kexue's :data:`RUN_FORMAT`
            (then it is not a folder kexue created, and nothing in it may be overwritten), or it is not JSON.
    """
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise KexueError(f"{path} is not a kexue run directory (no config.json)")
    status = _read_json(path / "status.json", {})
    if status.get("format") != RUN_FORMAT:
        raise KexueError(f"{path} is not a kexue run directory (no status.json with format {RUN_FORMAT!r}); "
                         "kexue only writes into run folders that it created")
    return status


def load_run(run_dir: str | Path) -> dict:
    """Everything a report shows, read from ``run_dir``.

    Raises:
        KexueError: ``run_dir`` is not a run directory kexue created (no ``config.json``, or no ``status.json`` with
            kexue's :data:`RUN_FORMAT`), or one of its files is not valid JSON (a torn last line of
            ``metrics.jsonl``, what a crash during an append leaves, is left out instead).
    """
    path = Path(run_dir)
    status = read_status(path)
    metrics, bad = read_jsonl(path / "metrics.jsonl")
    if bad and bad != [torn_tail(path / "metrics.jsonl")]:
        raise KexueError(f"{path / 'metrics.jsonl'} has {len(bad)} line(s) that are not JSON objects, the first: "
                         f"{bad[0][:60]!r}; `kexue run NAME --resume {path}` moves them to metrics.dropped.jsonl")
    summary, blocks = _read_json(path / "summary.json", {}), _read_json(path / "report.json", [])
    for where, items, ok in (("summary.json", summary.values(), lambda e: isinstance(e, dict)),
                             ("report.json", blocks, _is_block)):
        if bad_item := next((item for item in items if not ok(item)), None):
            raise KexueError(f"{path / where} holds {str(bad_item)[:60]!r}, which kexue did not write there; "
                             "restore it or start a new run")
    return {
        "path": path,
        "config": _read_json(path / "config.json", {}),
        "env": _read_json(path / "env.json", {}),
        "status": status,
        "summary": summary,
        "blocks": blocks,
        "metrics": metrics,
    }


_BLOCK_KEYS = {"section": ("title",), "text": ("text",), "table": ("header", "rows"), "figure": ("path",)}


def _is_block(block: Any) -> bool:
    """Whether ``block`` is a report block as :class:`~kexue.experiments.rundir.Run` writes them."""
    keys = _BLOCK_KEYS.get(block.get("type")) if isinstance(block, dict) else None
    return keys is not None and all(k in block for k in keys)


def headline_figure(run: dict) -> str | None:
    """The relative path of the run's headline figure (the one marked, else the first), or None."""
    figures = [b for b in run["blocks"] if b["type"] == "figure"]
    marked = [b for b in figures if b.get("headline")]
    chosen = (marked or figures or [None])[0]
    return chosen["path"] if chosen else None


def render_markdown(run: dict) -> str:
    """The report as Markdown (figures referenced by relative path)."""
    cfg, env, status = run["config"], run["env"], run["status"]
    lines = [f"# {cfg.get('experiment', 'run')}", ""]
    seconds = status.get("seconds")
    lines.append(f"Status: **{status.get('status')}**" + (f" in {seconds:.1f} s" if seconds is not None else "")
                 + f", preset `{status.get('preset', '?')}`, seed {cfg.get('seed')}, device `{cfg.get('device')}`.")
    if status.get("error"):
        lines += ["", f"Error: `{status['error']}` (traceback in `error.txt`)."]
    if run["summary"]:
        lines += ["", "## Summary", "", _md_table(_SUMMARY_HEADER, _summary_rows(run["summary"]))]
    for block in run["blocks"]:
        kind = block["type"]
        if kind == "section":
            lines += ["", f"## {block['title']}"]
        elif kind == "text":
            lines += ["", block["text"]]
        elif kind == "table":
            lines += [""] + ([f"*{block['caption']}*", ""] if block.get("caption") else [])
            lines += [_md_table(block["header"], block["rows"])]
        elif kind == "figure":
            lines += ["", f"![{block.get('caption', '')}]({block['path']})"]
            if block.get("caption"):
                lines += ["", f"*{block['caption']}*"]
    lines += ["", "## Configuration", "", _md_table(["key", "value"], [[k, json.dumps(v)] for k, v in cfg.items()])]
    lines += ["", "## Environment", "", _md_table(["key", "value"], [[k, _fmt(v)] for k, v in env.items()])]
    return "\n".join(lines) + "\n"


# Marks every <img> once the page has loaded, so a headless browser (and the tests) can see which figures failed.
_IMG_CHECK = """<script>window.addEventListener('load',()=>{for(const i of document.images){
i.dataset.loaded=(i.complete&&i.naturalWidth>0)?'1':'0';}document.body.dataset.checked='1';});</script>"""


def _img_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(run: dict) -> str:
    """The report as one self-contained HTML page (figures embedded)."""
    cfg, env, status = run["config"], run["env"], run["status"]
    state = status.get("status", "unknown")
    seconds = status.get("seconds")
    parts = [f"<h1>{html.escape(str(cfg.get('experiment', 'run')))}</h1>",
             f'<p><span class="status {state}">{state}</span> '
             + (f"{seconds:.1f} s, " if seconds is not None else "")
             + f"preset <code>{html.escape(str(status.get('preset', '?')))}</code>, seed {cfg.get('seed')}, "
             f"device <code>{html.escape(str(cfg.get('device')))}</code></p>"]
    if status.get("error"):
        parts.append(f"<p class='bad'>Error: <code>{html.escape(status['error'])}</code> (traceback in "
                     "<code>error.txt</code>)</p>")
    if run["summary"]:
        parts += ["<h2>Summary</h2>", _summary_html(run["summary"])]
    for block in run["blocks"]:
        kind = block["type"]
        if kind == "section":
            parts.append(f"<h2>{html.escape(block['title'])}</h2>")
        elif kind == "text":
            parts += [f"<p>{_inline_html(p)}</p>" for p in block["text"].split("\n\n")]
        elif kind == "table":
            if block.get("caption"):
                parts.append(f"<p class='muted'>{_inline_html(block['caption'])}</p>")
            parts.append(_html_table(block["header"], block["rows"]))
        elif kind == "figure":
            src = run["path"] / block["path"]
            img = _img_data_uri(src) if src.exists() else block["path"]
            parts.append(f'<figure><img src="{img}" alt="{html.escape(block.get("caption", ""))}">'
                         f"<figcaption>{_inline_html(block.get('caption', ''))}</figcaption></figure>")
    parts += ["<h2>Configuration</h2>", _html_table(["key", "value"], [[k, json.dumps(v)] for k, v in cfg.items()])]
    parts += ["<h2>Environment</h2>", _html_table(["key", "value"], [[k, _fmt(v)] for k, v in env.items()])]
    title = html.escape(str(cfg.get("experiment", "run")))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}{_IMG_CHECK}</body></html>\n")


def render_report(run_dir: str | Path) -> Path:
    """(Re-)write ``report.md`` and ``report.html`` in ``run_dir``; returns the HTML path."""
    run = load_run(run_dir)
    path = run["path"]
    write_text_atomic(path / "report.md", render_markdown(run))
    return write_text_atomic(path / "report.html", render_html(run))


# --- tour index --------------------------------------------------------------------------------------------------

def render_index(tour_dir: str | Path, cards: list[dict], *, running: bool) -> Path:
    """Write ``index.html`` for a tour: one card per post.

    Args:
        cards: one dict per post with ``post`` (number), ``title``, ``url``, ``experiment`` (name or None),
            ``status`` (``pending``, ``running``, ``done``, ``failed`` or ``missing``), and for finished runs
            ``run`` (run directory relative to ``tour_dir``), ``seconds`` and ``error``.
        running: the tour is still going; the page then reloads itself every 15 s.
    """
    tour_dir = Path(tour_dir)
    out = []
    for card in cards:
        state = card["status"]
        head = (f'<h2>Post {card["post"]}: <a href="{html.escape(card["url"])}">{html.escape(card["title"])}</a>'
                "</h2>")
        body = [head]
        if card.get("experiment"):
            body.append(f'<p><code>{html.escape(card["experiment"])}</code> '
                        f'<span class="status {state}">{state}</span>'
                        + (f' <span class="muted">{card["seconds"]:.0f} s</span>' if card.get("seconds") else "")
                        + "</p>")
        else:
            body.append('<p class="muted">No experiment registered for this post yet.</p>')
        if card.get("run"):
            run = load_run(tour_dir / card["run"])
            fig = headline_figure(run)
            if fig:
                body.append(f'<img src="{html.escape(card["run"])}/{html.escape(fig)}" alt="headline figure">')
            if run["summary"]:
                body.append(_summary_html({k: v for k, v in list(run["summary"].items())[:6]}))
            if card.get("error"):
                body.append(f"<p class='bad'><code>{html.escape(card['error'][:300])}</code></p>")
            body.append(f'<p><a href="{html.escape(card["run"])}/report.html">full report</a></p>')
        out.append(f'<div class="card">{"".join(body)}</div>')
    refresh = '<meta http-equiv="refresh" content="15">' if running else ""
    state = "running: this page reloads as results arrive" if running else "finished"
    page = (f"<!doctype html><html><head><meta charset='utf-8'>{refresh}<title>kexue tour</title>"
            f"<style>{_CSS}</style></head><body><h1>kexue: a tour of eight posts from Scientific Spaces</h1>"
            f"<p class='muted'>Tour {state}. Each card shows a post's headline experiment: its figure and its "
            f"numbers against the quality bar and the published number.</p>"
            f'<div class="grid">{"".join(out)}</div>{_IMG_CHECK}</body></html>\n')
    tmp = tour_dir / "index.html.tmp"
    tmp.write_text(page)
    tmp.replace(tour_dir / "index.html")
    return tour_dir / "index.html"
