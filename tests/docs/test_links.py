"""Every relative link of README.md, docs/*.md and the other READMEs points to a file that exists, and an anchor
(`#...`) to a heading of the page it names, as GitHub makes anchors of headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.examples import ROOT, pages

CHECKED = [*pages(), ROOT / "client" / "README.md", ROOT / "deploy" / "README.md", ROOT / "ARCHITECTURE.md",
           ROOT / "SECURITY.md"]
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """`text` without fenced blocks and inline code, where brackets are not links."""
    text = re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"`([^`]*)`", r"\1", heading)
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6} +(.+?) *#*$", prose(page.read_text()), re.M):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        found.add(s if n == 0 else f"{s}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(page.read_text()))]


def test_slugs_are_githubs() -> None:
    assert slug("Swagger UI, OpenAPI and AsyncAPI") == "swagger-ui-openapi-and-asyncapi"
    assert slug("Use it from CI") == "use-it-from-ci"
    assert slug("`LXDGW_REMOTES` and ?remote=*") == "lxdgw_remotes-and-remote"


def test_links_are_found() -> None:
    assert "docs/api.md" in links(ROOT / "README.md")
    assert "docs/api.md#reads-from-the-model" in links(ROOT / "README.md")


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in CHECKED])
def test_relative_links_resolve(page: str) -> None:
    source = ROOT / page
    broken = []
    for target in links(source):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (source.parent / path).resolve() if path else source
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert broken == [], f"{page}: " + "; ".join(broken)
