from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.http.errors import ProblemError
from app.http.pagination import PageParams, decode_cursor, encode_cursor, paginate


@given(st.sets(st.text(min_size=1, max_size=8), max_size=40), st.integers(min_value=1, max_value=7))
def test_walking_every_page_yields_each_item_once_in_order(names: set[str], limit: int) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = paginate(list(names), PageParams(limit=limit, cursor=cursor), key=str, filters={"p": "x"})
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(names)


def test_bad_cursors_are_400() -> None:
    for bad in ("%%%", "bm90LWpzb24", encode_cursor("a", {"prefix": "x"})):
        with pytest.raises(ProblemError) as exc:
            decode_cursor(bad, {"prefix": "y"})
        assert exc.value.status == 400
