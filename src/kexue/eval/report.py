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
import time
from pathlib import Path
from typing import Any

from kexue._fs import read_jsonl, torn_tail, write_text_atomic
from kexue.errors import KexueError

_CSS = """
:root{--fg:#1d1d1f;--muted:#6e6e73;--line:#e2e2e7;--soft:#f5f5f7;--ok:#1a7f37;--ok-bg:#e7f5ea;--bad:#c0262d;
--bad-bg:#fdeeee;--warn:#b45309;--warn-bg:#fff5dc;--link:#0b5cd5}
*{box-sizing:border-box}html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:1100px;margin:0 auto;
padding:1.5em 1em 3em;color:var(--fg);line-height:1.5;overflow-wrap:break-word}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.7em;line-height:1.2;margin:.3em 0 .3em}
h2{font-size:1.25em;margin-top:1.8em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
.table-wrap{overflow-x:auto;margin:.8em 0;max-width:100%;
background:linear-gradient(to right,#fff 30%,#fff0) left/3em 100% no-repeat local,
linear-gradient(to left,#fff 30%,#fff0) right/3em 100% no-repeat local,
radial-gradient(farthest-side at 0 50%,#0002,#0000) left/.8em 100% no-repeat scroll,
radial-gradient(farthest-side at 100% 50%,#0002,#0000) right/.8em 100% no-repeat scroll}
table{border-collapse:collapse;font-size:.92em}
td,th{border-bottom:1px solid var(--line);padding:.35em .7em;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}tbody tr:hover{background:#fafafc}
td.long{min-width:16em}.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f0f0f3;padding:0 .25em;border-radius:3px;overflow-wrap:anywhere;font-size:.92em}
pre{background:var(--soft);padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:#555;font-size:.9em}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.na{color:#888}.muted{color:var(--muted)}
.status{display:inline-block;padding:.1em .65em;border-radius:1em;font-size:.85em;font-weight:600;background:#ececf0;
color:#444;white-space:nowrap}
.status.done{background:var(--ok-bg);color:var(--ok)}.status.failed{background:var(--bad-bg);color:var(--bad)}
.status.running{background:var(--warn-bg);color:var(--warn)}
.status.running::before{content:"";display:inline-block;width:.55em;height:.55em;margin-right:.4em;border-radius:50%;
background:currentColor;animation:pulse 1.2s ease-in-out infinite}
@keyframes pulse{50%{opacity:.25}}
.mark{display:inline-block;padding:.15em .65em;border-radius:1em;font-weight:650;font-size:.9em;white-space:nowrap;
background:#e5e5ea;color:#555}.mark.met{background:var(--ok);color:#fff}.mark.missed{background:var(--bad);color:#fff}
body.tour{max-width:1240px;background:var(--soft)}
.lede{color:var(--muted);margin:0 0 1.2em;max-width:52em}
.strip{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,9.5em),1fr));gap:.6em;margin:0 0 1.6em}
.stat{background:#fff;border:1px solid var(--line);border-radius:10px;padding:.55em .9em;min-width:0}
.stat .label{font-size:.72em;text-transform:uppercase;letter-spacing:.07em;color:var(--muted)}
.stat .big{font-size:1.4em;font-weight:650;line-height:1.25}.stat .small{font-size:.82em;color:var(--muted)}
.big .ok,.big .bad{font-weight:650}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,440px),1fr));gap:1.2em;align-items:start}
.card{background:#fff;border:1px solid var(--line);border-top:4px solid #c7c7cc;border-radius:12px;min-width:0;
padding:.9em 1.2em 1em;display:flex;flex-direction:column;gap:.6em}
.card.met{border-top-color:var(--ok)}.card.missed,.card.failed{border-top-color:var(--bad)}
.card.running{border-top-color:#e8a13a}
.card-head{display:flex;flex-wrap:wrap;align-items:center;gap:.4em .6em;font-size:.85em;color:var(--muted)}
.card-head .post{font-weight:650;text-transform:uppercase;letter-spacing:.06em;font-size:.9em}
.card-head .when{margin-left:auto}
.card h2{font-size:1.2em;line-height:1.3;margin:0;padding:0;border:none}.card h2 a{color:inherit}
.claim{margin:0;color:#3a3a3c}
.headline{display:grid;grid-template-columns:minmax(0,1fr) auto;align-items:center;gap:.1em 1em;
padding:.55em .9em .65em;border-radius:10px;background:var(--soft)}
.headline.met{background:var(--ok-bg)}.headline.missed{background:var(--bad-bg)}
.hl-value{font-size:2.2em;font-weight:700;line-height:1.15;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.hl-text{grid-column:1/-1;line-height:1.35}.hl-name{font-weight:600;overflow-wrap:anywhere}
.hl-ref{font-size:.88em;color:var(--muted)}
.fig{display:block;border:1px solid var(--line);border-radius:8px;overflow:hidden;background:#fff}
.fig img{display:block;max-width:100%;max-height:34em;width:auto;height:auto;margin:0 auto}
.metrics{list-style:none;margin:0;padding:0;font-size:.9em}
.metrics li{display:grid;grid-template-columns:minmax(0,1fr) auto auto 1.6em;gap:.1em .8em;align-items:baseline;
padding:.3em 0;border-top:1px solid var(--line)}
.m-name{overflow-wrap:anywhere}.m-value{font-weight:600;font-variant-numeric:tabular-nums;text-align:right}
.m-bar{color:var(--muted);white-space:nowrap}.metrics .mark{padding:0;background:none;color:#999;text-align:center}
.metrics .mark.met{color:var(--ok)}.metrics .mark.missed{color:var(--bad)}
.more{font-size:.85em;color:var(--muted);margin:0}
.placeholder{border:2px dashed var(--line);border-radius:10px;padding:1.6em 1em;text-align:center;color:var(--muted)}
.error{background:var(--bad-bg);color:#7a1d22;padding:.6em .8em;border-radius:8px;font-size:.85em;margin:0;
max-height:9em;overflow:auto}
.card footer{margin-top:auto;display:flex;flex-wrap:wrap;justify-content:space-between;gap:.3em 1em;font-size:.88em}
.card footer code{color:var(--muted)}
@media (min-width:900px){.grid{grid-template-columns:minmax(0,1fr)}
.card{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,3fr);grid-template-rows:repeat(7,auto) 1fr;
column-gap:1.8em;row-gap:0;align-items:start}.card>*{grid-column:1;margin:0 0 .6em}
.card>h2{margin-bottom:.45em}
.card>.fig,.card>.placeholder{grid-column:2;grid-row:1/span 8;margin:0}.card footer{margin:.2em 0 0}}
@media (max-width:600px){body{padding:1em .7em 2em}h1{font-size:1.45em}.card{padding:.8em .9em .9em}
.hl-value{font-size:1.9em}.stat:last-child{grid-column:1/-1}}
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


def _bar_text(entry: dict) -> str:
    """``≥ 0.9`` or ``≤ 0.02``: the bar with the side a value must be on."""
    return f"{'≥' if entry.get('direction') == 'max' else '≤'}\u00a0{_fmt(entry['bar'])}"  # no line break


def _summary_rows(summary: dict) -> list[list[str]]:
    rows = []
    for name, e in summary.items():
        bar = _bar_text(e) if e.get("bar") is not None else "–"
        rows.append([name, _fmt(e.get("value")), bar, _met_mark(e)[0], _fmt(e.get("paper")), e.get("note", "")])
    return rows


_SUMMARY_HEADER = ["metric", "value", "bar", "", "paper", "note"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _breakable(markup: str) -> str:
    """Let snake_case names wrap after their underscores (outside tags), so a narrow screen can fit them."""
    return re.sub(r"_(?![^<>]*>)", "_<wbr>", markup)


_NUMBER = re.compile(r"[-+−]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?%?|–")
_NUM_CLASS = ' class="num"'


def _html_table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    # Columns of numbers are right-aligned, header included.
    numeric = [bool(rows) and all(_NUMBER.fullmatch(str(r[j]).strip()) for r in rows) for j in range(len(header))]
    head = "".join(f"<th{_NUM_CLASS if numeric[j] else ''}>{_breakable(html.escape(h))}</th>"
                   for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = [classes[i][j]] if classes and classes[i][j] else []
            if numeric[j]:
                cls.append("num")
            elif len(str(cell)) > 40:
                cls.append("long")  # a minimum width, else a wide table squeezes it into a tall column of words
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{_breakable(_inline_html(str(cell)))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # The wrapper scrolls a table too wide for the screen inside its own box, never the page.
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


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


_HEAD = "<meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>"

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
    return (f"<!doctype html><html><head>{_HEAD}<title>{title}</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}{_IMG_CHECK}</body></html>\n")


def render_report(run_dir: str | Path) -> Path:
    """(Re-)write ``report.md`` and ``report.html`` in ``run_dir``; returns the HTML path."""
    run = load_run(run_dir)
    path = run["path"]
    write_text_atomic(path / "report.md", render_markdown(run))
    return write_text_atomic(path / "report.html", render_html(run))


# --- tour index --------------------------------------------------------------------------------------------------

# Ticks every [data-since] element (a running card's elapsed time, the tour's total) once a second: the page itself
# is only rewritten between runs. The format follows _duration.
_ELAPSED = """<script>(()=>{const f=s=>{s=Math.max(0,Math.round(s));if(s<60)return s+' s';let m=Math.floor(s/60);
s%=60;if(m<60)return m+' min '+String(s).padStart(2,'0')+' s';const h=Math.floor(m/60);m%=60;
return h+' h '+String(m).padStart(2,'0')+' min';};const tick=()=>{const now=Date.now()/1000;
for(const e of document.querySelectorAll('[data-since]'))e.textContent=f(now-Number(e.dataset.since));};
tick();setInterval(tick,1000);})();</script>"""

_MAX_CARD_METRICS = 4  # further metrics on a card, below its headline; the rest are in the full report


def headline_metric(summary: dict, name: str | None = None) -> str | None:
    """The summary entry a tour card shows large: ``name`` if the run recorded it, else the first with a bar, else
    the first; None for an empty summary."""
    if name in summary:
        return name
    return next((k for k, e in summary.items() if e.get("bar") is not None), next(iter(summary), None))


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 07 s`` or ``1 h 05 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _mark_html(entry: dict, *, short: bool = False) -> str:
    """The met / missed mark of a summary entry (``short``: the symbol alone, for a metric row)."""
    met = entry.get("met")
    if met is None:
        return f'<span class="mark" title="no bar">{"–" if short else "no bar"}</span>'
    word = "met" if met else "missed"
    symbol = "✓" if met else "✗"
    return f'<span class="mark {word}" title="{word}">{symbol if short else f"{symbol} {word}"}</span>'


def _headline_html(name: str, entry: dict) -> str:
    refs = []
    if entry.get("bar") is not None:
        refs.append(f"bar {_bar_text(entry)}")
    if entry.get("paper") is not None:
        refs.append(f"paper {_fmt(entry['paper'])}")
    ref = f'<div class="hl-ref">{html.escape(" · ".join(refs))}</div>' if refs else ""
    tone = {True: " met", False: " missed"}.get(entry.get("met"), "")
    return (f'<div class="headline{tone}" title="{html.escape(entry.get("note", ""))}">'
            f'<div class="hl-value">{_fmt(entry.get("value"))}</div>{_mark_html(entry)}'
            f'<div class="hl-text"><div class="hl-name">{html.escape(_label(name))}</div>{ref}</div></div>')


def _metric_rows_html(summary: dict, skip: str | None) -> str:
    """Up to ``_MAX_CARD_METRICS`` further metrics as short rows, those with a bar first."""
    rest = sorted((k for k in summary if k != skip), key=lambda k: summary[k].get("bar") is None)
    rows = []
    for name in rest[:_MAX_CARD_METRICS]:
        e = summary[name]
        bar = _bar_text(e) if e.get("bar") is not None else ""
        rows.append(f'<li title="{html.escape(e.get("note", ""))}"><span class="m-name">{html.escape(_label(name))}'
                    f'</span><span class="m-value">{_fmt(e.get("value"))}</span><span class="m-bar">{bar}</span>'
                    f"{_mark_html(e, short=True)}</li>")
    more = len(rest) - _MAX_CARD_METRICS
    tail = f'<p class="more">and {more} more in the full report</p>' if more > 0 else ""
    return (f'<ul class="metrics">{"".join(rows)}</ul>' if rows else "") + tail


def _card_html(tour_dir: Path, card: dict, run: dict | None, ahead: int, now: float) -> str:
    """One post's card: claim, headline number with its bar and mark, figure, a few more metrics, links."""
    state = card["status"]
    summary = run["summary"] if run else {}
    key = headline_metric(summary, card.get("metric"))
    tone = state
    if state == "done" and key and summary[key].get("met") is not None:
        tone = "met" if summary[key]["met"] else "missed"
    when = ""
    if state == "running" and card.get("started"):
        when = f'<span data-since="{card["started"]:.0f}">{_duration(now - card["started"])}</span>'
    elif card.get("seconds") is not None:
        when = _duration(card["seconds"])
    elif state == "pending":
        when = "up next" if ahead == 0 else f"{ahead} ahead in the queue"
    body = [f'<div class="card-head"><span class="post">Post {card["post"]}</span><span class="when">{when}</span>'
            f'<span class="status {state}">{state}</span></div>',
            f'<h2><a href="{html.escape(card["url"])}">{html.escape(card["title"])}</a></h2>']
    if card.get("claim"):
        body.append(f'<p class="claim">{_inline_html(card["claim"])}</p>')
    if key:
        body.append(_headline_html(key, summary[key]))
    fig = headline_figure(run) if run else None
    if fig:
        src = html.escape(f"{card['run']}/{fig}")
        body.append(f'<a class="fig" href="{src}" target="_blank" rel="noopener" title="open full size">'
                    f'<img src="{src}" alt="headline figure of {html.escape(card["experiment"])}"></a>')
    elif not run:
        waiting = {"running": "Running now: its number and figure appear here when it finishes.",
                   "pending": "Waiting for its turn.",
                   "missing": "No experiment registered for this post yet."}
        body.append(f'<div class="placeholder">{waiting.get(state, state)}</div>')
    if card.get("error"):
        body.append(f'<pre class="error">{html.escape(card["error"][:400])}</pre>')
    body.append(_metric_rows_html(summary, key))
    if run:
        links = [f'<a href="{html.escape(card["run"])}/report.html">Full report →</a>']
        if state == "failed" and (tour_dir / card["run"] / "error.txt").is_file():
            links.append(f'<a href="{html.escape(card["run"])}/error.txt">traceback</a>')
        body.append(f'<footer><span>{" · ".join(links)}</span><code>{html.escape(card["experiment"])}</code>'
                    "</footer>")
    name = html.escape(card.get("experiment") or "")
    return (f'<article class="card {tone}" data-status="{state}" data-experiment="{name}">{"".join(body)}'
            "</article>")


def _strip_html(cards: list[dict], runs: list[dict | None], *, running: bool, preset: str | None,
                started: float | None, env: dict | None, now: float) -> str:
    """The summary strip: posts run, bars met / missed, total time, preset, machine."""
    finished = [c for c in cards if c["status"] in ("done", "failed")]
    failed = sum(c["status"] == "failed" for c in finished)
    posts = len({c["post"] for c in cards})
    counts = f"{len(finished) - failed} done · {failed} failed"
    if running:
        counts += f" · {sum(c['status'] in ('pending', 'running') for c in cards)} to go"
    bars = [e["met"] for r in runs if r for e in r["summary"].values() if e.get("met") is not None]
    if started is not None:
        elapsed = _duration(now - started)
        total = f'<span data-since="{started:.0f}">{elapsed}</span>' if running else elapsed
        clock = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started if running else now))
        when = f"started {clock}" if running else f"finished {clock}"
    else:
        total, when = _duration(sum(c.get("seconds") or 0 for c in finished)), "sum of the runs"
    ran = [r for r in runs if r]
    preset = preset or next((r["status"].get("preset") for r in ran if r["status"].get("preset")), None)
    env = env or next((r["env"] for r in ran if r["env"]), {})
    device = str(env.get("device", "?")) + (f" ({env['gpu']})" if env.get("gpu") else "")
    missed = len(bars) - sum(bars)
    tiles = [("Posts run", f"{len({c['post'] for c in finished})} / {posts}", counts),
             ("Bars met", f"{sum(bars)} / {len(bars)}",
              f'<span class="bad">{missed} missed</span>' if missed else "none missed" if bars else "none yet"),
             ("Time", total, when),
             ("Preset", html.escape(str(preset or "?")), "kexue tour --preset"),
             ("Machine", f"{env.get('cpu_count', '?')} cores",
              html.escape(f"{device} · torch {env.get('torch', '?')}"))]
    return '<section class="strip">' + "".join(
        f'<div class="stat"><div class="label">{label}</div><div class="big">{big}</div>'
        f'<div class="small">{small}</div></div>' for label, big, small in tiles) + "</section>"


def render_index(tour_dir: str | Path, cards: list[dict], *, running: bool, preset: str | None = None,
                 started: float | None = None, env: dict | None = None) -> Path:
    """Write ``index.html`` for a tour: a summary strip, then one card per post.

    Args:
        cards: one dict per post with ``post`` (number), ``title``, ``url``, ``experiment`` (name or None),
            ``status`` (``pending``, ``running``, ``done``, ``failed`` or ``missing``), optionally ``claim`` (one
            sentence) and ``metric`` (the summary entry to show large, see :func:`headline_metric`); a running card
            has ``started`` (epoch seconds), a finished one ``run`` (run directory relative to ``tour_dir``),
            ``seconds`` and ``error``.
        running: the tour is still going; the page then reloads itself every 15 s.
        preset, started, env: the tour's preset, start time (epoch seconds) and machine (``env.json`` keys
            ``cpu_count``, ``device``, ``gpu``, ``torch``); the preset and machine default to the first run's.
    """
    tour_dir = Path(tour_dir)
    now = time.time()
    runs = [load_run(tour_dir / c["run"]) if c.get("run") else None for c in cards]
    out, ahead = [], 0  # ahead: pending cards before this one
    for card, run in zip(cards, runs, strict=True):
        out.append(_card_html(tour_dir, card, run, ahead, now))
        ahead += card["status"] == "pending"
    strip = _strip_html(cards, runs, running=running, preset=preset, started=started, env=env, now=now)
    refresh = '<meta http-equiv="refresh" content="15">' if running else ""
    lede = ("Running: this page reloads every 15 s as results arrive." if running else
            "Each card states a post's claim, the number that tests it against its bar and the paper's, and the "
            "headline figure (click it for full size); the full report has the rest.")
    page = (f"<!doctype html><html><head>{_HEAD}{refresh}<title>kexue tour</title><style>{_CSS}</style></head>"
            "<body class='tour'><h1>kexue: a tour of eight posts from Scientific Spaces</h1>"
            f"<p class='lede'>{lede}</p>{strip}"
            f'<div class="grid">{"".join(out)}</div>{_IMG_CHECK}{_ELAPSED if running else ""}</body></html>\n')
    tmp = tour_dir / "index.html.tmp"
    tmp.write_text(page)
    tmp.replace(tour_dir / "index.html")
    return tour_dir / "index.html"
