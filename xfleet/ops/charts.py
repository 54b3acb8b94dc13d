"""Charts and page parts of the self-contained HTML reports (compression, capacity): inline SVG
and CSS, no scripts, no external assets, every label escaped.

- `bar_chart`: horizontal bars, optionally a second bar per row with an error line;
- `line_chart`: series of points over a numeric x axis, with dashed lines, shaded bands
  (an interval) and horizontal reference lines (80 %, 90 %, 100 % of a pool);
- `CSS`, `cards`, `html_table`: the look the reports share.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xfleet.core.units import format_size

# one bar of bar_chart: (label, value, second value or None, its error half-width or None)
Bar = tuple[str, float, float | None, float | None]


def fmt_bytes(n: float | None) -> str:
    """Bytes for people ('1.50T'), negative values with a sign, None as '-'."""
    if n is None:
        return "-"
    return ("-" if n < 0 else "") + format_size(abs(int(n)))


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;
background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;font-size:13px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:12px}th,td{padding:4px 8px;border-bottom:1px solid #eee}
th{background:#f5f5f5;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg text{font-size:12px;fill:#333}svg text.t{font-size:14px;font-weight:bold}
svg text.v{fill:#555}.empty{color:#888}ul.notes{color:#444;font-size:13px}
"""


def cards(items: Sequence[tuple[str, str]]) -> str:
    """A row of figure cards: (caption, value)."""
    e = html.escape
    return ('<div class="cards">' + "".join(
        f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>' for k, v in items)
        + "</div>")


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]],
               total: Sequence[str] | None = None, *, text_columns: int = 1) -> str:
    """A table of text cells (escaped here): the first `text_columns` columns left-aligned,
    the others as numbers; `total` is a last row of header cells."""
    e = html.escape

    def row(cells: Sequence[str], tag: str) -> str:
        return "<tr>" + "".join(
            f'<{tag} class="{"" if i < text_columns else "n"}">{e(c)}</{tag}>'
            for i, c in enumerate(cells)) + "</tr>"

    body = [row(r, "td") for r in rows] + ([row(total, "th")] if total is not None else [])
    return (f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>\n"
            + "".join(body) + "</table>")


def bar_chart(title: str, items: Sequence[Bar],
              *, color: str = "#2e7d32", alt: str = "#90caf9", width: int = 1100,
              value_fmt: Callable[[float], str] = fmt_bytes,
              legend: tuple[str, str] | None = None) -> str:
    """A horizontal bar chart: (label, value, second value or None, its error half-width)."""
    if not items:
        return f'<p class="empty">{html.escape(title)}: nothing to show</p>'
    row_h, label_w, pad = 22, 300, 10
    vmax = max(max(abs(v), abs(s or 0) + (e or 0)) for _, v, s, e in items) or 1
    plot_w = width - label_w - 150
    h = row_h * len(items) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
           f'role="img" aria-label="{html.escape(title)}">',
           f'<text x="{pad}" y="16" class="t">{html.escape(title)}</text>']
    if legend:
        out.append(f'<rect x="{width - 400}" y="6" width="12" height="12" fill="{color}"/>'
                   f'<text x="{width - 384}" y="16">{html.escape(legend[0])}</text>'
                   f'<rect x="{width - 270}" y="6" width="12" height="12" fill="{alt}"/>'
                   f'<text x="{width - 254}" y="16">{html.escape(legend[1])}</text>')
    for i, (label, v, second, err) in enumerate(items):
        y = 28 + i * row_h
        w = max(0.0, v) / vmax * plot_w
        out.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
                   f'{html.escape(label[:48])}</text>')
        bar_h = 9 if second is not None else 16
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                   f'fill="{color}"><title>{html.escape(label)}: {value_fmt(v)}</title></rect>')
        text_x = label_w + w
        if second is not None:
            w2 = max(0.0, second) / vmax * plot_w
            out.append(f'<rect x="{label_w}" y="{y + 9}" width="{w2:.1f}" height="8" '
                       f'fill="{alt}"><title>{html.escape(label)}: {value_fmt(second)}'
                       '</title></rect>')
            if err:
                lo = max(0.0, second - err) / vmax * plot_w + label_w
                hi = (second + err) / vmax * plot_w + label_w
                out.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 13}" y2="{y + 13}" '
                           'stroke="#0d47a1" stroke-width="1.5"/>')
            text_x = max(text_x, label_w + w2)
        txt = value_fmt(v) + (f" / {value_fmt(second)}" if second is not None else "")
        out.append(f'<text x="{text_x + 6:.1f}" y="{y + 12}" class="v">{html.escape(txt)}</text>')
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Series:
    """One series of a line chart: `points` (x, y) joined by a line (dashed if `dash`), with a
    dot and a tooltip at each point when `dots` (the tooltip: `tips[i]`, else x and y)."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str
    dash: bool = False
    dots: bool = False
    tips: Sequence[str] = ()


@dataclass(frozen=True)
class Band:
    """A shaded area between two lines: (x, low, high) at each x (an interval)."""

    label: str
    points: Sequence[tuple[float, float, float]]
    color: str


def line_chart(title: str, series: Sequence[Series], *, bands: Sequence[Band] = (),
               hlines: Sequence[tuple[float, str]] = (), x_labels: Sequence[tuple[float, str]] = (),
               y_max: float | None = None, y_fmt: Callable[[float], str] = fmt_bytes,
               width: int = 1100, height: int = 240) -> str:
    """Lines over a numeric x axis (e.g. days), y from 0 to `y_max` (default: the largest y);
    points above `y_max` are clipped to the top. `hlines`: (y, label) reference lines;
    `x_labels`: (x, text) ticks under the axis. A legend names every series and band."""
    xs = [x for s in series for x, _ in s.points] + [x for b in bands for x, _, _ in b.points]
    if not xs:
        return f'<p class="empty">{html.escape(title)}: nothing to show</p>'
    ys = [y for s in series for _, y in s.points] + [h for b in bands for _, _, h in b.points]
    top_y = y_max if y_max is not None else max([*ys, *(y for y, _ in hlines), 1.0])
    top_y = top_y or 1.0
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0
    legend = [(s.label, s.color, s.dash) for s in series] + [(b.label, b.color, False)
                                                              for b in bands]
    left, right, top, bottom = 80, 60, 48 if legend else 30, 34
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / span * pw

    def py(y: float) -> float:
        return top + ph - max(0.0, min(y, top_y)) / top_y * ph

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{e(title)}">',
           f'<text x="10" y="16" class="t">{e(title)}</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
           f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{e(y_fmt(top_y))}</text>',
           f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>']
    for b in bands:
        upper = " ".join(f"{px(x):.1f},{py(h):.1f}" for x, _, h in b.points)
        lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(b.points))
        out.append(f'<polygon points="{upper} {lower}" fill="{b.color}" fill-opacity="0.25" '
                   f'stroke="none"><title>{e(b.label)}</title></polygon>')
    for y, label in hlines:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   'stroke="#c62828" stroke-dasharray="2,4" stroke-width="1"/>'
                   f'<text x="{left + pw + 4}" y="{py(y) + 4:.1f}">{e(label)}</text>')
    for s in series:
        if not s.points:
            continue
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="6,4"' if s.dash else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" '
                   f'stroke-width="2"{dash}><title>{e(s.label)}</title></polyline>')
        if s.dots:
            for i, (x, y) in enumerate(s.points):
                tip = s.tips[i] if i < len(s.tips) else f"{x:g}: {y_fmt(y)}"
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" '
                           f'fill="{s.color}"><title>{e(tip)}</title></circle>')
    for x, text in x_labels:
        out.append(f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle">'
                   f'{e(text)}</text>')
    for i, (label, color, dashed) in enumerate(legend):  # a row under the title
        x = left + i * 170
        dash = ' stroke-dasharray="4,3"' if dashed else ""
        out.append(f'<line x1="{x}" x2="{x + 18}" y1="30" y2="30" stroke="{color}" '
                   f'stroke-width="3"{dash}/><text x="{x + 22}" y="34">{e(label[:22])}</text>')
    out.append("</svg>")
    return "\n".join(out)
