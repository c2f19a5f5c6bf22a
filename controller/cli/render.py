"""Output for people (aligned tables, colour only on a terminal) and for scripts (JSON)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "bold": "1", "dim": "2"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Style:
    colour: bool

    @classmethod
    def for_stream(cls, stream: TextIO, env: Mapping[str, str] | None = None) -> Style:
        """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
        env = os.environ if env is None else env
        return cls(colour=stream.isatty() and "NO_COLOR" not in env)

    def paint(self, text: str, colour: str) -> str:
        if not self.colour or not text:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: Style) -> str:
    """Columns padded to their widest cell (colour codes do not count), kubectl's upper-case headers."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))
    lines = [
        "   ".join(style.paint(h.upper().ljust(w), "bold") for h, w in zip(headers, widths, strict=True))
    ]
    for row in rows:
        cells = [cell + " " * (w - visible_len(cell)) for cell, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(line.rstrip() for line in lines)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def ips_text(ips: Sequence[str]) -> str:
    return ", ".join(ips) if ips else "-"
