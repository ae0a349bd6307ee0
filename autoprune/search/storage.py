"""Connections to the study database: opening a storage, masking its password, retrying lost connections, and
the lease (heartbeat) a driver keeps on the trials it has in flight.

Secrets: a storage URL is shown and stored with its password replaced by ``***`` (:func:`mask_url`). The password
comes only from the URL given at run time or from the environment: ``AUTOPRUNE_STORAGE_PASSWORD`` fills in a URL
without one (any database), and PostgreSQL's own ``PGPASSWORD`` / ``~/.pgpass`` work as for any libpq client.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from autoprune.errors import UserError

PASSWORD_ENV = "AUTOPRUNE_STORAGE_PASSWORD"
MASK = "***"
RETRY_ATTEMPTS = 8
RETRY_FIRST_DELAY_S = 0.25
RETRY_MAX_DELAY_S = 5.0  # 8 attempts wait about 18 s in all: enough for a database restart
LEASE_INTERVALS = 3  # a trial whose heartbeat is this many intervals old is stale: its driver is gone
T = TypeVar("T")


def _parsed(url: str):
    try:
        return make_url(url)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: nothing to mask
        return None


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; safe to print and to write to files."""
    parsed = _parsed(url)
    if parsed is None or parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def url_password(url: str) -> str | None:
    parsed = _parsed(url)
    return None if parsed is None or parsed.password is None else str(parsed.password)


def redact(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and the full URL) masked, for error messages from drivers."""
    password = url_password(url)
    text = text.replace(url, mask_url(url))
    return text.replace(password, MASK) if password else text


def connect_url(url: str) -> str:
    """The URL to connect with: a password from ``AUTOPRUNE_STORAGE_PASSWORD`` when the URL has none. A masked
    password (copied from a file autoprune wrote) is refused, saying where the real one goes."""
    parsed = _parsed(url)
    if parsed is None:
        return url
    if parsed.password == MASK:
        raise UserError(f"the password in storage URL {mask_url(url)!r} is masked ({MASK!r}, as autoprune writes it); "
                        f"pass the real URL, or set {PASSWORD_ENV} (or PGPASSWORD for PostgreSQL)")
    env = os.environ.get(PASSWORD_ENV)
    if parsed.password is None and env and parsed.username:
        return parsed.set(password=env).render_as_string(hide_password=False)
    return url


def open_storage(url: str, heartbeat_interval: int | None = None,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
                 ) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``. Connections are checked before use (``pool_pre_ping``), SQLite waits
    for a busy database instead of failing, and with ``heartbeat_interval`` (s) trials carry a lease that
    expires after three intervals without a heartbeat (``on_stale`` is then called for each, once)."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    lease = {}
    if heartbeat_interval is not None:
        lease = {"heartbeat_interval": int(heartbeat_interval), "grace_period": LEASE_INTERVALS * int(heartbeat_interval),
                 "heartbeat_stale_trial_callback": on_stale}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Not retried: a URL that cannot connect at start is the user's to fix, and should say so at once.
        return optuna.storages.RDBStorage(connect_url(url), engine_kwargs, **lease)


def lost_connection(err: BaseException) -> bool:
    """Whether ``err`` is a dropped or refused database connection (worth retrying), not a bad request."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.PendingRollbackError):  # a session a dropped connection left behind
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def with_retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with exponential backoff while the database connection is lost."""
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - filtered just below
            if attempt == RETRY_ATTEMPTS - 1 or not lost_connection(err):
                raise
            time.sleep(min(RETRY_FIRST_DELAY_S * 2**attempt, RETRY_MAX_DELAY_S))
    raise AssertionError("unreachable")


class Lease:
    """Renews the heartbeat of every trial this driver holds, every ``interval`` seconds from a daemon thread.

    Optuna starts its own heartbeat thread only inside ``study.optimize``; an ask/tell driver must keep the
    lease itself, or other drivers would take its trials for dead ones.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float) -> None:
        self.storage = storage
        self.interval = interval
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoprune-lease", daemon=True)
        self._thread.start()

    def hold(self, trial_id: int) -> None:
        with_retry(self.storage.record_heartbeat, trial_id)  # at once: a trial without one never goes stale
        with self._lock:
            self._held.add(trial_id)

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = sorted(self._held)
            for trial_id in held:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a lost connection: the next beat tries again
                    pass
