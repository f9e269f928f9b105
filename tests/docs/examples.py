"""The shell examples of README.md and docs/*.md: every ```sh block, in order, with its heading and whether it is
marked `<!-- not run: <reason> -->` on the line just above it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = re.compile(r"^<!-- not run: (.*?) -->$")


def pages() -> list[Path]:
    """README.md, then the pages of docs/ by name."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """Line of the opening fence (1-based)."""
    heading: str
    script: str
    not_run: str | None
    """The reason given in the `not run` mark above the block, if any."""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.heading})"


def sh_blocks(page: Path) -> list[Block]:
    """Every ```sh block of `page`, in order."""
    lines = page.read_text().split("\n")
    blocks: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip().startswith("```"):
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            if line.strip() == "```sh":
                previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
                m = NOT_RUN.match(previous)
                blocks.append(Block(page, start + 1, heading, "\n".join(lines[start + 1:end]) + "\n",
                                    m.group(1).strip() if m else None))
            i = end
        i += 1
    return blocks


def not_run_marks(page: Path) -> list[tuple[int, str]]:
    """(line, text) of every `not run` mark of `page`, well formed or not."""
    return [(n, line.strip()) for n, line in enumerate(page.read_text().split("\n"), 1) if "not run" in line
            and line.strip().startswith("<!--")]
