"""Write ``auth_module/types.py`` from ``interfaces/types/*.yaml``: the YAML is the only place a
payload field or an enum value is written.

    python scripts/gen_types.py          # rewrite auth_module/types.py
    python scripts/gen_types.py --check  # exit 1 if auth_module/types.py is not current (CI)

What the YAML cannot say is in the tables below: which types the module uses (and in what
order they are written), which models keep unknown fields to forward them whole, and which
fields the wire requires but a reader fills in when they are missing. Field names, their
JSON types, optionality, string lengths and enum values all come from the YAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TYPES_DIR = ROOT / "interfaces" / "types"
OUTPUT = ROOT / "auth_module" / "types.py"

#: The YAML types the module uses, by file, in the order they are written.
SECTIONS: dict[str, list[str]] = {
    "authorization": [
        "AuthorizationStatus", "CertificateStatus", "TokenValidationStatus", "AuthorizationType",
        "IdTokenType", "SelectionAlgorithm", "CustomIdToken", "IdToken", "ProvidedIdToken",
        "ValidationResult", "ValidationResultUpdate", "TokenValidationStatusMessage",
        "WithdrawAuthorizationRequest", "WithdrawAuthorizationResult",
    ],
    "evse_manager": [
        "ConnectorTypeEnum", "Connector", "Evse", "StopTransactionReason",
        "StopTransactionRequest", "StartSessionReason", "SessionEventEnum", "SessionStarted",
        "TransactionStarted", "TransactionFinished", "SessionEvent",
    ],
    "reservation": [
        "ReservationResult", "Reservation", "ReservationEndReason", "ReservationCheckStatus",
        "ReservationCheck", "ReservationUpdateStatus",
    ],
}
#: Python names that differ from the YAML's.
RENAME = {"Connector": "EvseConnector"}
#: Enums EVerest writes inline in a property: (type, property) -> the StrEnum's name.
INLINE_ENUMS = {("ReservationUpdateStatus", "reservation_status"): "ReservationUpdate"}
#: Models that keep fields they do not know, so a token or event is forwarded whole.
PASS_THROUGH = {"ProvidedIdToken", "ValidationResult", "SessionStarted", "TransactionStarted",
                "TransactionFinished", "SessionEvent"}
_ZERO_METER = 'Field(default_factory=lambda: {"energy_Wh_import": {"total": 0}})'
#: Models whose string lengths (YAML ``maxLength``) are checked when read: a token value;
#: elsewhere the sender's limits are its own business, and a message is forwarded whole.
LENGTH_CHECKED = {"CustomIdToken", "IdToken"}
#: Required on the wire, filled in when a reader gets it without: lenient in, complete out.
READ_DEFAULTS = {
    ("ValidationResult", "tariff_messages"): "Field(default_factory=list)",
    ("SessionStarted", "meter_value"): _ZERO_METER,
    ("TransactionStarted", "meter_value"): _ZERO_METER,
    ("TransactionFinished", "meter_value"): _ZERO_METER,
    ("SessionEvent", "uuid"): '""',
    ("SessionEvent", "timestamp"): '""',
}

HEADER = '''"""The payload types of the contract, as pydantic models. GENERATED: do not edit.

Written by ``scripts/gen_types.py`` from ``interfaces/types/*.yaml``, the one place a field
is written (field names follow EVerest's types letter for letter: other EVerest modules read
what we publish). ``tests/unit/test_types_match_interfaces.py`` checks the result against
the YAML, and ``python scripts/gen_types.py --check`` that this file is current.

Models ignore unknown fields when parsing (other modules may be newer than we are) but the
ones we forward verbatim (``ProvidedIdToken``) keep them, so a token is handed on whole.
Serialise with :func:`to_wire`, which drops ``None`` so optional fields are absent, not null.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .typebase import Model, PassThrough, same_token, to_wire
'''


def load() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(TYPES_DIR.glob("*.yaml")):
        for name, schema in (yaml.safe_load(path.read_text(encoding="utf-8"))["types"]).items():
            found[name] = schema
    return found


def py_name(name: str) -> str:
    return RENAME.get(name, name)


def annotation(owner: str, prop: str, schema: dict[str, Any], known: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref is not None:
        target = ref.split("#/")[1]
        if any(target in names for names in SECTIONS.values()):
            return py_name(target)
        # A type the module does not look into: kept as plain JSON.
        return "str" if known.get(target, {}).get("type") == "string" else "dict[str, Any]"
    if (owner, prop) in INLINE_ENUMS:
        return INLINE_ENUMS[(owner, prop)]
    kind = schema.get("type")
    if kind == "array":
        return f"list[{annotation(owner, prop, schema['items'], known)}]"
    return {"string": "str", "integer": "int", "boolean": "bool", "number": "float",
            "object": "dict[str, Any]"}[kind]


def enum_block(name: str, values: list[str]) -> list[str]:
    return [f"class {name}(StrEnum):", *(f'    {v} = "{v}"' for v in values)]


def model_block(name: str, schema: dict[str, Any], known: dict[str, Any]) -> list[str]:
    base = "PassThrough" if name in PASS_THROUGH else "Model"
    lines = [f"class {py_name(name)}({base}):"]
    required = set(schema.get("required", []))
    for prop, sub in schema.get("properties", {}).items():
        ann = annotation(name, prop, sub, known)
        length = (sub.get("maxLength") if name in LENGTH_CHECKED and "$ref" not in sub
                  and sub.get("type") == "string" else None)
        default = READ_DEFAULTS.get((name, prop))
        if prop in required and default is None:
            value = f" = Field(max_length={length})" if length else ""
        elif default is not None:
            value = f" = {default}"
        else:
            ann += " | None"
            value = f" = Field(default=None, max_length={length})" if length else " = None"
        lines.append(f"    {prop}: {ann}{value}")
    return lines


def render() -> str:
    known = load()
    blocks: list[tuple[str, list[str]]] = []  # (section, lines of one class)
    names: list[str] = []
    for section, type_names in SECTIONS.items():
        for name in type_names:
            schema = known[name]
            for (owner, prop), enum_name in INLINE_ENUMS.items():
                if owner == name:
                    blocks.append((section, enum_block(enum_name,
                                                       schema["properties"][prop]["enum"])))
                    names.append(enum_name)
            blocks.append((section, enum_block(name, schema["enum"]) if "enum" in schema
                           else model_block(name, schema, known)))
            names.append(py_name(name))
    out = [HEADER, "\n__all__ = [\n"]
    out += [f'    "{n}",\n' for n in sorted([*names, "same_token", "to_wire"])]
    out.append("]\n")
    current = None
    for section, lines in blocks:
        if section != current:
            title = section.replace("_", " ")
            out.append(f"\n\n# --- {title} " + "-" * (85 - len(title)) + "\n")
            current = section
        out.append("\n\n" + "\n".join(lines) + "\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if auth_module/types.py is not what the YAML gives")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print("auth_module/types.py is not current: run python scripts/gen_types.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
