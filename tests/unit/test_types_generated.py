"""``auth_module/types.py`` is generated from ``interfaces/types/*.yaml``; it must be current.

The YAML is the one place a payload field or enum value is written (README, "Types from
one source"); this is the CI check that nobody edited the output by hand or changed the
YAML without running ``python scripts/gen_types.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_types", ROOT / "scripts" / "gen_types.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_types_py_is_what_the_yaml_gives() -> None:
    gen = _generator()
    expected = gen.render()  # type: ignore[attr-defined]
    actual = (ROOT / "auth_module" / "types.py").read_text(encoding="utf-8")
    assert actual == expected, "auth_module/types.py is stale: run python scripts/gen_types.py"


def test_the_check_mode_agrees() -> None:
    gen = _generator()
    assert gen.main(["--check"]) == 0  # type: ignore[attr-defined]
