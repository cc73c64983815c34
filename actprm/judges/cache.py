"""A persistent sqlite cache of judge answers: no question is paid for twice, across restarts."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits (sqlite retries internally) for another process's lock before failing."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    judge TEXT NOT NULL,
    question TEXT NOT NULL,
    first_error INTEGER NOT NULL,
    step_labels TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    raw_output TEXT NOT NULL,
    prompt_version TEXT,
    created_at REAL NOT NULL,
    paid_by TEXT,
    item_id TEXT,
    PRIMARY KEY (judge, question)
)
"""
_FIELDS = ("first_error", "step_labels", "tokens", "raw_output", "prompt_version")
_PAYER_COLUMNS = ("paid_by", "item_id")
"""Who paid for an answer, and for which item; added to files written before they existed."""


class JudgeCache:
    """Answers keyed by (judge identity, question hash), in one sqlite file.

    The file is in WAL mode, so several processes (for example the ranks of a distributed run)
    can read and write it at once; a writer that meets a lock waits up to `BUSY_TIMEOUT_S`. The
    first answer stored for a key wins. One instance may be used from several threads.

    Each answer records who paid for it (`payer`, when set) and for which item, so that a run resumed
    after a crash tells the answers it paid for itself (`paid_by`) from those it finds in the cache.
    """

    payer: str | None = None
    """Who pays for the answers put from now on (an `ActivePRMTrainer` sets its run's id)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        self._set_up()

    def _set_up(self) -> None:
        """WAL mode and the table. Two processes opening a new file at once can find it locked without
        sqlite waiting (the switch to WAL does not use the busy timeout), so that is retried here."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._add_payer_columns()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _add_payer_columns(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
        for column in _PAYER_COLUMNS:
            if column not in columns:
                try:
                    self._db.execute(f"ALTER TABLE answers ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as error:  # another process added it meanwhile
                    if "duplicate column" not in str(error):
                        raise

    def get(self, judge: str, question: str) -> dict[str, Any] | None:
        """The stored answer's fields (``first_error``, ``step_labels``, ``tokens``, ``raw_output``,
        ``prompt_version``), or ``None``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_FIELDS)} FROM answers WHERE judge = ? AND question = ?", (judge, question)
            ).fetchone()
        if row is None:
            return None
        answer = dict(zip(_FIELDS, row))
        answer["step_labels"] = json.loads(answer["step_labels"])
        return answer

    def paid_by(self, judge: str, question: str) -> tuple[str | None, str | None]:
        """Who paid for the stored answer (the `payer` then) and the id of the item it was asked for."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_PAYER_COLUMNS)} FROM answers WHERE judge = ? AND question = ?", (judge, question)
            ).fetchone()
        return (row[0], row[1]) if row is not None else (None, None)

    def put(self, judge: str, question: str, answer: Mapping[str, Any], item_id: str | None = None) -> None:
        """Store ``answer`` (a mapping with the fields `get` returns), paid by `payer` for the item ``item_id``,
        unless the key is already there."""
        values = [answer[name] for name in _FIELDS]
        values[1] = json.dumps(list(values[1]))
        columns = ", ".join((*_FIELDS, "created_at", *_PAYER_COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT OR IGNORE INTO answers (judge, question, {columns}) VALUES ({', '.join('?' * 10)})",
                (judge, question, *values, time.time(), self.payer, item_id),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"
