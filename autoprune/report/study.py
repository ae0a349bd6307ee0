"""Open an autoprune study by name: from ``--storage`` or the default ``autoprune-runs/STUDY/study.db``.

Reading a study must never create one: Optuna's SQLite storage creates a missing database file, so a SQLite URL
is checked for an existing file first.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autoprune.errors import UserError, unknown_choice
from autoprune.search.records import STUDY_ATTR
from autoprune.search.runner import open_storage

RUNS_DIR = Path("autoprune-runs")


def default_storage(study: str) -> Path:
    """Where ``autoprune search --study STUDY`` (without --out/--storage) puts the study database."""
    return RUNS_DIR / study / "study.db"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for other backends and in-memory SQLite)."""
    if not url.startswith("sqlite:"):
        return None
    rest = url.split(":", 1)[1]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def resolve_storage(study: str, storage: str | None) -> str:
    """The storage URL to read ``study`` from; a UserError says how to pass --storage when none is found."""
    if storage:
        path = sqlite_path(storage)
        if path is not None and not path.is_file():
            raise UserError(
                f"--storage {storage!r}: no database file at {str(path)!r}; pass the URL `autoprune search` "
                "printed (e.g. sqlite:///autoprune-runs/STUDY/study.db, three slashes then the path)"
            )
        return storage
    path = default_storage(study)
    if not path.is_file():
        raise UserError(
            f"no study database at {str(path)!r} (the default for --study {study!r}); run from the folder holding "
            "autoprune-runs/, or pass --storage sqlite:///PATH/study.db (the storage `autoprune search` printed)"
        )
    return f"sqlite:///{path.resolve()}"


def load_study(study: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """The autoprune study named ``study`` and the storage URL it was read from."""
    url = resolve_storage(study, storage)
    try:
        backend = open_storage(url)
        names = optuna.get_all_study_names(backend)
    except Exception as err:  # noqa: BLE001 - any failure here is the URL or the file
        raise UserError(
            f"cannot read study storage {url!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
            "(pass an Optuna storage URL such as sqlite:///path/study.db)"
        ) from err
    if study not in names:
        if not names:
            raise UserError(f"storage {url!r} holds no studies; run `autoprune search` first or check --storage")
        raise unknown_choice("study", study, names, f"studies in {url}")
    loaded = optuna.load_study(study_name=study, storage=backend)
    if not loaded.user_attrs.get(STUDY_ATTR):
        raise UserError(
            f"study {study!r} in {url!r} was not created by `autoprune search` (it has no {STUDY_ATTR!r} record); "
            "pass the name of an autoprune study"
        )
    return loaded, url
