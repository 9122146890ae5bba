"""``python -m auth_module``: the ``auth-module`` command (what an EVerest module.py runs)."""

import sys

from .cli import main

sys.exit(main())
