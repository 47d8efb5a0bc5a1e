"""Rewrite the worked-example blocks of docs/math.md with the current output of `xpcnn teach`.

A block is delimited by ``<!-- teach NAME [--option value ...] -->`` and ``<!-- /teach -->``.
tests/teach/test_teach_docs.py checks that every block equals what xpcnn prints today.
"""
from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "math.md"
BLOCK = re.compile(r"(<!-- teach (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /teach -->)", re.S)


def parse(spec: str) -> tuple[str, dict]:
    """'optimizers --steps 10' -> ('optimizers', {'steps': 10})."""
    words = spec.split()
    options, rest = {}, words[1:]
    while rest:
        key, value = rest[0].lstrip("-").replace("-", "_"), rest[1]
        options[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        rest = rest[2:]
    return words[0], options


def render(spec: str) -> str:
    sys.path.insert(0, str(ROOT))
    from xpcnn import teach
    name, options = parse(spec)
    return "```text\n" + str(teach.run(name, **options)) + "\n```\n"


def update(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), text)


if __name__ == "__main__":
    DOC.write_text(update(DOC.read_text()))
    print(f"updated {DOC}")
