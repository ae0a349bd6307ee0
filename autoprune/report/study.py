"""Open an autoprune study by name: from ``--storage`` or the default ``autoprune-runs/STUDY/study.db`` (the
folder name slugged as ``autoprune search`` slugs it).

Reading a study must never create one: Optuna's SQLite storage creates a missing database file, so a SQLite URL
is checked for an existing file first. URLs are shown with their password masked.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autoprune.errors import UserError, unknown_choice
from autoprune.paths import slug
from autoprune.search.storage import mask_url, open_storage, redact
from autoprune.search.store import STUDY_ATTR, read_study_record

RUNS_DIR = Path("autoprune-runs")


def default_storage(study: str) -> Path:
    """Where ``autoprune search --study STUDY`` (without --out/--storage) puts the study database."""
    return RUNS_DIR / slug(study) / "study.db"


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
                f"--storage {mask_url(storage)!r}: no database file at {str(path)!r}; pass the URL `autoprune search` "
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
    """The autoprune study named ``study`` and the storage URL it was read from (password masked)."""
    url = resolve_storage(study, storage)
    shown = mask_url(url)
    try:
        backend = open_storage(url)
        names = optuna.get_all_study_names(backend)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here is the URL or the file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"cannot read study storage {shown!r}: {redact(first, url)} "
            "(pass an Optuna storage URL such as sqlite:///path/study.db)"
        ) from None
    if study not in names:
        if not names:
            raise UserError(f"storage {shown!r} holds no studies; run `autoprune search` first or check --storage")
        raise unknown_choice("study", study, names, f"studies in {shown}")
    loaded = optuna.load_study(study_name=study, storage=backend)
    if read_study_record(loaded) is None:
        raise UserError(
            f"study {study!r} in {shown!r} was not created by `autoprune search` (it has no {STUDY_ATTR!r} record); "
            "pass the name of an autoprune study"
        )
    return loaded, shown
