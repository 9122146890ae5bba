"""The hand-written part of the payload types: their two base models and two helpers.

``types.py`` is generated from ``interfaces/types/*.yaml`` (``scripts/gen_types.py``) and
builds on these.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Ignores fields it does not know when parsing: other modules may be newer than we are."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PassThrough(BaseModel):
    """A model that keeps fields it does not know, to forward them untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict of ``model`` with absent optionals left out."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def same_token(a: str | None, b: str | None) -> bool:
    """Token values compare case-insensitively everywhere, as EVerest does."""
    return a is not None and b is not None and a.casefold() == b.casefold()
