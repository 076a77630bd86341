"""Writing result files: parent folders made, UTF-8, a final newline, dated names.

bench/results/ holds files named DATE-KIND-TAG.{json,md,png}; every benchmark that names its
own files uses dated_stem so that they sort by date and say what they are.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, payload: Any, indent: int = 2, default: Any = None) -> Path:
    return write_text(path, json.dumps(payload, indent=indent, ensure_ascii=False, default=default) + "\n")


def dated_stem(folder: str | Path, kind: str, tag: str) -> Path:
    """folder/DATE-KIND-TAG (local date), to which a suffix is added."""
    return Path(folder) / f"{date.today().isoformat()}-{kind}-{tag}"
