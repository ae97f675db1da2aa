"""HTML building blocks for the static report: escaping, tables, figure slots, the page shell.

Every piece of user-controlled text (plugin, dataset, suite names, hparams, errors) goes through
``esc`` or ``json_for_script``: a plugin named ``<img src=x onerror=alert(1)>`` renders as text.
plotly.js is inlined once, so the file opens with no network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs


def esc(text: Any) -> str:
    """Text for HTML element content and attribute values."""
    return html.escape("" if text is None else str(text), quote=True)


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``</script>``, ``<!--`` or line separators can appear."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "board",
          row_classes: Sequence[str] | None = None, raw_cols: frozenset[int] = frozenset()) -> str:
    """A table whose cells are escaped (except the columns in ``raw_cols``, built here from escaped parts)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{esc(row_classes[i])}"' if row_classes else ""
        cells = "".join(f"<td>{v if j in raw_cols else esc(v)}</td>" for j, v in enumerate(row))
        body.append(f"<tr{rc}>{cells}</tr>")
    return (f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


class FigureSlots:
    """Collects figures as ``<div>`` slots plus their JSON, drawn by one script at the end of the page."""

    def __init__(self) -> None:
        self.specs: list[str] = []

    def add(self, fig: go.Figure, title: str) -> str:
        fid = f"fig-{len(self.specs)}"
        self.specs.append(f'{{"id":"{fid}","fig":{pio.to_json(fig, validate=False)}}}')
        return f'<figure class="plot-box"><div class="plot" id="{fid}" aria-label="{esc(title)}"></div></figure>'

    def script(self) -> str:
        specs = json_for_script("[" + ",".join(self.specs) + "]")
        return f"""<script>
(function () {{
  const specs = {specs};
  const jobs = specs.map(function (s) {{
    const f = s.fig;
    return Plotly.newPlot(s.id, f.data, f.layout || {{}}, {{responsive: true, displaylogo: false}});
  }});
  Promise.all(jobs).then(function () {{ document.body.setAttribute("data-plots-ready", String(jobs.length)); }},
    function (e) {{ document.body.setAttribute("data-plots-error", String(e)); console.error(e); }});
}})();
</script>"""


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d0dc;font-size:13px}
main{padding:8px 28px 40px;max-width:1500px}
section.dataset{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 20px;margin:18px 0}
h2{font-size:19px;margin:10px 0}h3{font-size:15px;margin:18px 0 6px;color:#394150}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 7px;border-bottom:1px solid #e5e8ee;text-align:right;white-space:nowrap}
th{background:#eef1f5;position:sticky;top:0}td:nth-child(3),td:nth-child(4),th:nth-child(3),th:nth-child(4){text-align:left}
table.plain td,table.plain th{text-align:left;white-space:normal;max-width:720px}
tr.grp-1 td{background:#eaf6ec}tr.grp-1 td:first-child{border-left:4px solid #2e9e49}
.grp{display:inline-block;min-width:18px;border-radius:9px;padding:0 5px;background:#d9dee6;text-align:center}
tr.grp-1 .grp{background:#2e9e49;color:#fff}
.note{font-size:13px;color:#4a5262;max-width:1100px}.foot{font-size:12px;color:#5a6272}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:10px}
figure.plot-box{margin:0;border:1px solid #eceff3;border-radius:6px}.plot{height:420px}
nav a{margin-right:14px;color:#9fd0ff}code{background:#eef1f5;padding:0 3px;border-radius:3px}
.missing{padding:10px 14px;background:#fff8e5;border:1px solid #f0dca0;border-radius:6px;font-size:13px}
table.predgrid th,table.predgrid td{text-align:left;vertical-align:top;white-space:normal}
table.predgrid td{width:33%}figure.pred{margin:0}img.pred-img{display:block;width:100%;max-width:520px;height:auto}
figure.pred figcaption{font-size:12px;color:#4a5262;word-break:break-all;max-width:520px}
td.pred-missing{color:#7a5a00;background:#fff8e5}
"""


def page(title: str, header_lines: Sequence[str], nav: Sequence[tuple[str, str]], body: str, scripts: str) -> str:
    """The whole document; ``body``/``scripts`` are already-built HTML, the rest is escaped here."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    lines = "".join(f"<p>{esc(line)}</p>" for line in header_lines)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><header><h1>{esc(title)}</h1>{lines}<nav>{links}</nav>"
            f"</header><main>{body}</main>{scripts}</body></html>")

