"""The README's configuration table names every setting, and names no setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    section = text[text.index("## Configuration"):text.index("\n## ", text.index("## Configuration") + 5)]
    documented = set(re.findall(r"`(LXDGW_[A-Z_]+)`", section))
    known = {f"LXDGW_{name.upper()}" for name in Settings.model_fields}
    assert known - documented == set(), "settings missing from the README"
    assert documented - known == set(), "the README names settings that do not exist"
