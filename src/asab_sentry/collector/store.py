"""
SQLite storage of received envelope items: one row per item, indexed columns for filtering, the payload
kept whole. WAL journal: a row committed before the HTTP answer survives a ``kill -9`` of the collector.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import typing

from .. import payload
from .envelope import Envelope, Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	received REAL NOT NULL,
	project TEXT,
	type TEXT NOT NULL,
	event_id TEXT,
	level TEXT,
	release TEXT,
	environment TEXT,
	title TEXT,
	exception_type TEXT,
	trace_id TEXT,
	tags TEXT,
	envelope_header TEXT,
	item_header TEXT,
	payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_received ON items (received);
CREATE INDEX IF NOT EXISTS items_type ON items (type, received);
CREATE INDEX IF NOT EXISTS items_event_id ON items (event_id);
CREATE INDEX IF NOT EXISTS items_level ON items (level);
CREATE INDEX IF NOT EXISTS items_release ON items (release);
CREATE INDEX IF NOT EXISTS items_environment ON items (environment);
CREATE INDEX IF NOT EXISTS items_exception_type ON items (exception_type);
CREATE INDEX IF NOT EXISTS items_trace_id ON items (trace_id);
CREATE INDEX IF NOT EXISTS items_title ON items (title);
"""

#: Columns returned by `Store.list` (the payload is fetched by `Store.get`).
SUMMARY_COLUMNS = (
	"id",
	"received",
	"project",
	"type",
	"event_id",
	"level",
	"release",
	"environment",
	"title",
	"exception_type",
	"trace_id",
	"tags",
)


def _summary(item: Item) -> dict[str, typing.Any]:
	event = item.json if isinstance(item.json, dict) else {}
	chain = payload.exceptions(event)
	exception_type = chain[-1].get("type") if chain else None
	contexts = event.get("contexts") if isinstance(event.get("contexts"), dict) else {}
	trace = contexts.get("trace") if isinstance(contexts.get("trace"), dict) else {}
	if item.type in ("event", "transaction"):
		level = event.get("level") or ("info" if item.type == "transaction" else "error")
		title = payload.title(event, item.type)
	else:
		level = None
		title = item.type
	return {
		"type": item.type,
		"event_id": event.get("event_id"),
		"level": level,
		"release": event.get("release"),
		"environment": event.get("environment"),
		"title": title[:500] if title else title,
		"exception_type": exception_type,
		"trace_id": trace.get("trace_id"),
		"tags": json.dumps(payload.tags(event)),
	}


class Store:
	"""
	The collector's storage. Thread-safe; one connection per store object.

	Args:
		path: the SQLite file (``":memory:"`` for a throw-away store).
		max_age: delete items older than this many seconds (0: keep).
		max_count: keep at most this many items, the newest (0: no limit).
	"""

	def __init__(self, path: str, max_age: float = 0.0, max_count: int = 0):
		self.Path = path
		self.MaxAge = max_age
		self.MaxCount = max_count
		self._lock = threading.Lock()
		self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
		self._db.row_factory = sqlite3.Row
		if path != ":memory:":
			self._db.execute("PRAGMA journal_mode=WAL")
			# In WAL mode NORMAL keeps every committed transaction across a crash of the process.
			self._db.execute("PRAGMA synchronous=NORMAL")
		self._db.executescript(_SCHEMA)
		self._inserts = 0

	def close(self) -> None:
		with self._lock:
			self._db.close()

	def add(self, envelope: Envelope, project: str | None, received: float | None = None) -> list[int]:
		"""Store every item of the envelope in one transaction; return the row ids."""
		received = time.time() if received is None else received
		header = json.dumps(envelope.headers)
		ids = []
		with self._lock:
			self._db.execute("BEGIN")
			try:
				for item in envelope.items:
					row = _summary(item)
					if row["event_id"] is None and item.type in ("event", "transaction"):
						row["event_id"] = envelope.headers.get("event_id")
					cursor = self._db.execute(
						"INSERT INTO items (received, project, type, event_id, level, release, environment, title,"
						" exception_type, trace_id, tags, envelope_header, item_header, payload)"
						" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
						(
							received,
							project,
							row["type"],
							row["event_id"],
							row["level"],
							row["release"],
							row["environment"],
							row["title"],
							row["exception_type"],
							row["trace_id"],
							row["tags"],
							header,
							json.dumps(item.headers),
							item.payload,
						),
					)
					ids.append(cursor.lastrowid)
				self._db.execute("COMMIT")
			except BaseException:
				self._db.execute("ROLLBACK")
				raise
			self._inserts += 1
			if self._inserts % 100 == 1:
				self._apply_retention_locked()
		return ids

	def apply_retention(self) -> int:
		"""Delete what is past ``max_age`` / ``max_count``; return how many rows went."""
		with self._lock:
			return self._apply_retention_locked()

	def _apply_retention_locked(self) -> int:
		deleted = 0
		if self.MaxAge > 0:
			deleted += self._db.execute("DELETE FROM items WHERE received < ?", (time.time() - self.MaxAge,)).rowcount
		if self.MaxCount > 0:
			deleted += self._db.execute(
				"DELETE FROM items WHERE id <= (SELECT id FROM items ORDER BY id DESC LIMIT 1 OFFSET ?)",
				(self.MaxCount,),
			).rowcount
		return deleted

	def list(
		self,
		type: str | None = None,
		level: str | None = None,
		tag: tuple[str, str] | None = None,
		text: str | None = None,
		since: float | None = None,
		until: float | None = None,
		release: str | None = None,
		environment: str | None = None,
		event_id: str | None = None,
		after_id: int | None = None,
		limit: int = 50,
		offset: int = 0,
		newest_first: bool = True,
	) -> list[dict[str, typing.Any]]:
		"""Item summaries matching every given filter."""
		where, params = [], []
		for column, value in (
			("type", type),
			("level", level),
			("release", release),
			("environment", environment),
			("event_id", event_id),
		):
			if value is not None:
				where.append("{} = ?".format(column))
				params.append(value)
		if tag is not None:
			where.append("json_extract(tags, ?) = ?")
			params += ['$."{}"'.format(tag[0].replace('"', "")), tag[1]]
		if text:
			where.append("(title LIKE ? ESCAPE '\\' OR exception_type LIKE ? ESCAPE '\\')")
			pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
			params += [pattern, pattern]
		if since is not None:
			where.append("received >= ?")
			params.append(since)
		if until is not None:
			where.append("received < ?")
			params.append(until)
		if after_id is not None:
			where.append("id > ?")
			params.append(after_id)
		sql = "SELECT {} FROM items".format(", ".join(SUMMARY_COLUMNS))
		if where:
			sql += " WHERE " + " AND ".join(where)
		sql += " ORDER BY id {} LIMIT ? OFFSET ?".format("DESC" if newest_first else "ASC")
		params += [max(0, int(limit)), max(0, int(offset))]
		with self._lock:
			rows = self._db.execute(sql, params).fetchall()
		return [_row(r) for r in rows]

	def get(self, item_id: int) -> dict[str, typing.Any] | None:
		"""One item with its headers and payload (parsed JSON when it is JSON)."""
		with self._lock:
			row = self._db.execute(
				"SELECT {}, envelope_header, item_header, payload FROM items WHERE id = ?".format(
					", ".join(SUMMARY_COLUMNS)
				),
				(item_id,),
			).fetchone()
		if row is None:
			return None
		result = _row(row)
		result["envelope_header"] = json.loads(row["envelope_header"])
		result["item_header"] = json.loads(row["item_header"])
		payload = bytes(row["payload"])
		try:
			result["payload"] = json.loads(payload.decode("utf-8"))
		except ValueError:
			result["payload"] = payload.decode("utf-8", "replace")
		return result

	def clear(self) -> int:
		"""Delete every stored item (the web UI's Clear button); return how many went."""
		with self._lock:
			return self._db.execute("DELETE FROM items").rowcount

	def count(self, type: str | None = None) -> int:
		with self._lock:
			if type is None:
				return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
			return self._db.execute("SELECT COUNT(*) FROM items WHERE type = ?", (type,)).fetchone()[0]


def _row(row: sqlite3.Row) -> dict[str, typing.Any]:
	result = {column: row[column] for column in SUMMARY_COLUMNS}
	result["tags"] = json.loads(result["tags"]) if result["tags"] else {}
	return result
