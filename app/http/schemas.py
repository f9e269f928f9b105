"""Pieces the response schemas of several resources share."""

from __future__ import annotations

from typing import Any

from pydantic import Field


def used_by_field(example: str, description: str = "LXD URLs of what uses it") -> Any:
    """The `used_by` field of a resource: LXD URLs, none by default."""
    return Field(default_factory=list, description=description, examples=[[example]])
