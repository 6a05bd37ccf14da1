"""Error text for one-line reports: stored per-ticker errors and the CLI's stderr line."""

from __future__ import annotations

import re


def one_line(text: str) -> str:
    """`text` on one line: driver messages and SQLAlchemy's hints span several."""
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
