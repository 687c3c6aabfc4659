"""The README's configuration table is the users' reference: it must list every
key with the default the code really has."""

import math
import re
from pathlib import Path

from scarletnas.config import PipelineConfig, to_dict

README = Path(__file__).parents[1] / "README.md"


def _split(cell: str) -> list[str]:
    """Comma-separated items, commas inside backticks kept."""
    items, current, quoted = [], "", False
    for ch in cell:
        if ch == "`":
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    return [*items, current.strip()]


def _rows() -> dict[str, str]:
    """key -> documented default, from the table of config keys."""
    text = README.read_text()
    table = text[text.index("| key | default | meaning |"):]
    table = table[:table.index("\n\n")]
    documented = {}
    for line in table.splitlines()[2:]:
        keys_cell, defaults_cell = line.split("|")[1:3]
        keys = [k.strip("` ") for k in _split(keys_cell)]
        defaults = _split(defaults_cell)
        assert len(defaults) == len(keys), f"README row {keys}: {len(defaults)} defaults"
        section = keys[0].rsplit(".", 1)[0] + "." if "." in keys[0] else ""
        for key, default in zip(keys, defaults, strict=True):
            documented[key if "." in key or not section else section + key] = default
    return documented


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k, v


def _matches(documented: str, value) -> bool:
    text = re.sub(r"\s*\(.*\)$", "", documented).strip("` ")
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(text), value)
        except ValueError:
            return False
    return text == value


def test_readme_config_table_matches_the_effective_defaults():
    documented = _rows()
    actual = dict(_leaves(to_dict(PipelineConfig())))
    assert sorted(set(actual) - set(documented)) == [], "keys missing from the README table"
    assert sorted(set(documented) - set(actual)) == [], "README documents keys that do not exist"
    wrong = {k: (documented[k], v) for k, v in actual.items() if not _matches(documented[k], v)}
    assert wrong == {}, "README defaults (documented, actual) differ from the code"
