"""Text quoted from hostile files, made safe to print: every character that could move a terminal's cursor,
reorder a line or break XML is escaped."""

from __future__ import annotations

import unicodedata

#: Unicode categories never written raw: controls, format (bidi overrides), surrogates, private use, unassigned.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def printable(text: str) -> str:
    """`text` with every character that could move the cursor, reorder or break a report escaped (``\\x1b``).

    Tensor names, file names and messages quote hostile files: a terminal control sequence must not erase a
    table line, and XML must stay well-formed whatever a key holds.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)
