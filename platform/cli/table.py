"""Plain-text tables that fit the terminal: long cells wrap at spaces inside their column, nothing is
dropped; only a token longer than its whole column (a path, a URL) is split across lines."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

GAP = "  "
MIN_FLEX = 8


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` wins; 100 when output is not a terminal)."""
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def _widths(rows: Sequence[Sequence[str]], flex: set[int], width: int) -> list[int]:
    """Natural widths when they fit; else the fixed columns keep theirs, each flexible column but the
    last gets up to a third of the room left, and the last flexible column (the main text) the rest."""
    natural = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    total = sum(natural) + len(GAP) * (len(natural) - 1)
    if total <= width or not flex:
        return natural
    fixed = sum(w for k, w in enumerate(natural) if k not in flex) + len(GAP) * (len(natural) - 1)
    avail = max(MIN_FLEX * len(flex), width - fixed)
    out, last = list(natural), max(flex)
    for k in sorted(flex - {last}):
        out[k] = min(natural[k], max(MIN_FLEX, avail // 3))
    out[last] = min(natural[last], max(MIN_FLEX, avail - sum(out[k] for k in flex - {last})))
    return out


def wrap_table(header: Sequence[str], rows: Sequence[Sequence[str]], flex: Sequence[int] = (),
               width: int | None = None, indent: str = "") -> str:
    """``header`` + ``rows`` as aligned columns; the ``flex`` columns wrap to keep within ``width``."""
    table = [tuple(header), *(tuple(str(c) for c in r) for r in rows)]
    width = (width or terminal_width()) - len(indent)
    widths = _widths(table, set(flex), width)
    lines = []
    for row in table:
        cells = [textwrap.wrap(c, w, break_on_hyphens=False) or [""] if len(c) > w else [c]
                 for c, w in zip(row, widths, strict=True)]
        for i in range(max(len(c) for c in cells)):
            parts = [(c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths, strict=True)]
            lines.append((indent + GAP.join(parts)).rstrip())
    return "\n".join(lines)


def wrap_field(label: str, text: str, width: int | None = None, label_width: int = 15) -> str:
    """``  label:  text`` with the text wrapped under itself."""
    width = width or terminal_width()
    lead = f"  {label + ':':{label_width}s}"
    return textwrap.fill(text, max(30, width), initial_indent=lead, subsequent_indent=" " * len(lead),
                         break_on_hyphens=False)
