"""Where autoprune reads shipped data and writes its caches; atomic file writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent


def autoprune_home() -> Path:
    """Cache root: ``$AUTOPRUNE_HOME``, else ``$XDG_CACHE_HOME/autoprune``, else ``~/.cache/autoprune``."""
    if env := os.environ.get("AUTOPRUNE_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autoprune"


def slug(text: str) -> str:
    """``text`` as a safe folder name: runs of other characters than letters, digits, ``_.-`` become ``-``
    (so a study named "../x" cannot put files outside autoprune-runs/)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def shipped_dir(name: str) -> Path:
    """A shipped data folder (``hardware_profiles`` or ``search_spaces``).

    In a source checkout they are top-level folders; in an installed wheel they are package data under
    ``autoprune/_shipped/`` (see ``pyproject.toml``).
    """
    for candidate in (_PACKAGE_DIR / "_shipped" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped folder {name!r} not found; the installation is incomplete")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    A crash leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make shared profiles unreadable to others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
