"""``auth-module everest-module DIR [--name NAME]``: the module folder EVerest's manager starts.

``DIR/NAME/manifest.yaml`` is this project's manifest made into an EVerest one (the Auth
keys as EVerest names them, our extra keys, the optional ``kvs`` requirement);
``DIR/NAME/module.py`` is what the manager runs, as ``python3 module.py`` with no
arguments (EVEREST-MANAGER.md §a). ``python3`` there is whatever the charger's PATH
finds, usually not the environment this package was installed into; so module.py records
that environment's interpreter (``sys.executable`` now) and re-executes it with
``-m auth_module --everest``. See the docstring written into module.py for the order.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..station import manifest
from .settings import EXTRA_CONFIG

__all__ = ["DEFAULT_NAME", "FolderError", "everest_manifest", "module_py", "write_module_folder"]

DEFAULT_NAME = "PyAuth"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")  # a module name EVerest accepts

#: EVerest's Auth module has no default for connection_timeout: a config without it is
#: refused by the manager there, and so it is here (the station file's default is ours).
_NO_DEFAULT = ("connection_timeout",)


class FolderError(Exception):
    """The folder cannot be written; ``str()`` is one line."""


def everest_manifest() -> dict[str, Any]:
    """The EVerest manifest of this module (valid against EVerest's manifest schema)."""
    ours = manifest()
    config = copy.deepcopy(ours["config"])
    for key in _NO_DEFAULT:
        config.get(key, {}).pop("default", None)
    config.update(copy.deepcopy(EXTRA_CONFIG))
    requires = copy.deepcopy(ours["requires"])
    requires.setdefault("kvs", {"interface": "kvs", "min_connections": 0, "max_connections": 1})
    return {
        "description": (
            "auth-module (Python), in place of EVerest's Auth module: takes tokens from token "
            "providers, has them validated by token validators, assigns each to an EVSE (or "
            "stops a transaction with it) and manages reservations, as Auth does. Beyond Auth: "
            "in-process card readers and validators, reservations kept across restarts."),
        "config": config,
        "provides": copy.deepcopy(ours["provides"]),
        "requires": requires,
        "metadata": copy.deepcopy(ours["metadata"]),
    }


_MODULE_PY = '''#!/usr/bin/env python3
# Written by `auth-module everest-module` (auth-module {version}). Write it again after
# moving or reinstalling auth-module: it records the interpreter auth-module lives in.
"""Starts auth-module for EVerest's manager.

The manager runs this file as `python3 module.py` with no arguments, or with this
folder's .venv/bin/python3 when that exists. That interpreter need not be the one
auth-module was installed into, so this file imports nothing of it: it replaces itself
(os.execv, same process id, so the manager's SIGTERM reaches the module) with

    PYTHON -P -m auth_module --everest --module-dir THIS_FOLDER

where PYTHON is, in this order: this folder's .venv/bin/python3 when the manager started
us from it and it has auth_module; the interpreter recorded below when this folder was
written; the interpreter running this file, if it has auth_module.
"""
import importlib.util
import os
import sys

RECORDED_PYTHON = {python!r}
HERE = os.path.dirname(os.path.abspath(__file__))


def candidates():
    current = sys.executable or ""
    has_module = importlib.util.find_spec("auth_module") is not None
    own_venv = os.path.join(HERE, ".venv") + os.sep
    if current and has_module and os.path.abspath(current).startswith(own_venv):
        yield current
    if os.path.isfile(RECORDED_PYTHON) and os.access(RECORDED_PYTHON, os.X_OK):
        yield RECORDED_PYTHON
    if current and has_module:
        yield current


def main():
    for python in candidates():
        try:
            os.execv(python, [python, "-P", "-m", "auth_module", "--everest",
                              "--module-dir", HERE])
        except OSError as exc:
            sys.stderr.write("auth-module: cannot run %s: %s\\n" % (python, exc))
    sys.stderr.write(
        "auth-module: not installed for %s, and the interpreter recorded in %s (%s) is "
        "gone; run `auth-module everest-module` again from the environment auth-module is "
        "installed in\\n" % (sys.executable, __file__, RECORDED_PYTHON))
    return 1


if __name__ == "__main__":
    sys.exit(main())
'''


def module_py(python: str) -> str:
    """The text of module.py, recording ``python`` (not resolved: a venv's python is a link)."""
    return _MODULE_PY.format(version=__version__, python=python)


def write_module_folder(directory: str | Path, name: str = DEFAULT_NAME,
                        python: str | None = None) -> Path:
    """Write ``directory/name/{manifest.yaml,module.py}``; returns the module folder."""
    if not _NAME.match(name):
        raise FolderError(f"--name {name!r}: an EVerest module name is letters, digits, "
                          "'_', '.', '-', starting with a letter or '_'")
    interpreter = python or sys.executable
    if not interpreter:
        raise FolderError("cannot tell which Python interpreter runs auth-module")
    folder = Path(directory).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        header = (f"# EVerest manifest of auth-module {__version__}, written by "
                  "`auth-module everest-module`.\n")
        text = header + yaml.safe_dump(everest_manifest(), sort_keys=False, allow_unicode=True,
                                       width=100)
        _write(folder / "manifest.yaml", text, 0o644)
        _write(folder / "module.py", module_py(os.path.abspath(interpreter)), 0o755)
    except OSError as exc:
        raise FolderError(f"{folder}: cannot write: {exc.strerror or exc}") from None
    return folder


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
