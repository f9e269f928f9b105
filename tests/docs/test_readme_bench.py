"""The README's benchmark table has exactly the rows `make bench` prints (bench/_table.py's MEASURES), in order.

A structural check only: which figures, not their values.
"""

from __future__ import annotations

from pathlib import Path

from bench._table import HEADER, Row, expected, parse, render

ROOT = Path(__file__).resolve().parents[2]


def benchmarks_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Benchmarks")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_readme_table_has_the_rows_of_the_bench_output() -> None:
    section = benchmarks_section()
    assert "| " + " | ".join(HEADER) + " |" in section
    assert parse(section) == expected()


def test_readme_table_has_every_figure() -> None:
    assert "not measured" not in benchmarks_section()


def test_render_and_parse_agree() -> None:
    rows = [Row(m, v, "1 ms", "1.00x", "5") for m, v in expected()]
    assert parse(render(rows)) == expected()
    assert "not measured" in render(rows[1:])
    assert parse(render(rows[1:])) == expected()
