"""The HTML reports' parts (xfleet/ops/charts.py): inline SVG that escapes every label, puts
points where their values say, and says so when there is nothing to draw. The pages built from
them are rendered by Chromium in tests/unit/ops/test_report.py and tests/unit/cli/
test_capacity.py."""

from __future__ import annotations

import re

from xfleet.ops import charts


def test_bar_chart_escapes_labels_and_scales_bars() -> None:
    svg = charts.bar_chart("<b>title</b>", [("a<&>", 100.0, 50.0, 10.0), ("b", 50.0, None, None)],
                           legend=("one", "two"))
    assert "<b>" not in svg and "&lt;b&gt;title" in svg and "a&lt;&amp;&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect x="300" y="\d+" width="([\d.]+)"', svg)]
    assert widths[0] == 2 * widths[2] and widths[1] == widths[2]  # 100, 50 (second), 50
    assert svg.count("<line") == 1  # the one error bar
    assert "nothing to show" in charts.bar_chart("empty", [])


def test_line_chart_places_points_bands_and_reference_lines() -> None:
    svg = charts.line_chart(
        "t & t", [charts.Series("a<b", [(0.0, 0.0), (10.0, 50.0), (20.0, 200.0)], "#123456",
                                dots=True, tips=["x", "y", "z"]),
                  charts.Series("proj", [(20.0, 100.0), (30.0, 120.0)], "#654321", dash=True)],
        bands=[charts.Band("band", [(20.0, 100.0, 100.0), (30.0, 110.0, 130.0)], "#ff0000")],
        hlines=[(80.0, "80 %")], x_labels=[(0.0, "start"), (30.0, "end")], y_max=100.0,
        y_fmt=lambda v: f"{v:g}", width=440, height=190)
    assert "t &amp; t" in svg and "a&lt;b" in svg and "<title>z</title>" in svg
    # x from 0..30 over left=80..width-right=380; y 0..100 over top=48..156 (clipped above)
    cx = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    cy = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)]
    assert cx == [80.0, 180.0, 280.0] and cy == [156.0, 102.0, 48.0]
    assert "stroke-dasharray" in svg and svg.count("<polygon") == 1
    assert ">80 %<" in svg and ">start<" in svg and ">end<" in svg
    assert "nothing to show" in charts.line_chart("empty", [])


def test_cards_and_table_escape_their_text() -> None:
    assert "&lt;x&gt;" in charts.cards([("<x>", "1")])
    table = charts.html_table(["a", "<b>"], [["n1", "1<2"]], ["TOTAL", "3"], text_columns=1)
    assert "&lt;b&gt;" in table and "1&lt;2" in table
    assert '<td class="">n1</td><td class="n">' in table and "<th class=\"\">TOTAL</th>" in table
    assert charts.fmt_bytes(None) == "-" and charts.fmt_bytes(-2048) == "-2.00K"
