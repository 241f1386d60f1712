"""
SQLite storage of what the collector received.

Tables (schema version 2; a file of an older version is moved aside as ``<file>.v1`` and started anew):

- ``items``: one row per envelope item (event, transaction, log batch, span batch, check-in, session,
  client report, attachment, profile, feedback, ...): summary columns for filtering, the payload (JSON items
  normalized once, see `normalize`; attachments and other binary items as the exact bytes sent);
- ``issues``: error and message events grouped by `grouping.group`, with count, first/last seen, releases and
  environments;
- ``logs``: one row per log record of ``log`` items (time, level, body, attributes; also the ``otel_log``
  items of sentry-sdk before 2.28);
- ``spans``: one row per span of ``span`` items (v2 span streaming and single v1 spans);
- ``check_ins``: one row per cron check-in (monitor slug, status, duration).

Every public read method returns plain dicts (JSON-serializable, documented per method) — the JSON API, the
terminal viewer and the web UI use them as they are. Times are Unix seconds (float); ``received`` is when the
collector stored the item, ``timestamp`` what the client said.

WAL journal: a row committed before the HTTP answer survives a ``kill -9`` of the collector.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
import typing

from .. import payload
from .envelope import Envelope, EnvelopeError, Item
from .grouping import group
from .normalize import Normalizer, attributes, clean_text, level, to_seconds

SCHEMA_VERSION = 2

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
	issue_id INTEGER,
	parent_event_id TEXT,
	size INTEGER,
	envelope_header TEXT,
	item_header TEXT,
	payload BLOB NOT NULL,
	sent BLOB
);
CREATE INDEX IF NOT EXISTS items_type ON items (type, id);
CREATE INDEX IF NOT EXISTS items_event_id ON items (event_id);
CREATE INDEX IF NOT EXISTS items_issue ON items (issue_id, id) WHERE issue_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_parent ON items (parent_event_id) WHERE parent_event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_trace ON items (trace_id) WHERE trace_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS issues (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	hash TEXT NOT NULL UNIQUE,
	grouping TEXT,
	title TEXT,
	culprit TEXT,
	level TEXT,
	count INTEGER NOT NULL,
	first_seen REAL NOT NULL,
	last_seen REAL NOT NULL,
	releases TEXT NOT NULL,
	environments TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	item_id INTEGER NOT NULL,
	timestamp REAL,
	level TEXT,
	severity_number INTEGER,
	body TEXT,
	trace_id TEXT,
	span_id TEXT,
	release TEXT,
	environment TEXT,
	attributes TEXT
);
CREATE INDEX IF NOT EXISTS logs_item ON logs (item_id);
CREATE TABLE IF NOT EXISTS spans (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	item_id INTEGER NOT NULL,
	trace_id TEXT,
	span_id TEXT,
	parent_span_id TEXT,
	name TEXT,
	op TEXT,
	start REAL,
	end REAL,
	status TEXT,
	is_segment INTEGER,
	release TEXT,
	environment TEXT,
	attributes TEXT
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_item ON spans (item_id);
CREATE TABLE IF NOT EXISTS check_ins (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	item_id INTEGER NOT NULL,
	received REAL NOT NULL,
	check_in_id TEXT,
	monitor_slug TEXT,
	status TEXT,
	duration REAL,
	release TEXT,
	environment TEXT
);
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
	"issue_id",
	"parent_event_id",
	"size",
)

#: Item types whose payload is normalized as an event.
EVENT_LIKE = ("event", "transaction", "feedback")
#: Item types that belong to the event named in their envelope's header (attachments and the like).
LINKED_TYPES = ("attachment", "profile", "user_report", "feedback", "replay_event", "replay_recording")

_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "warning": "warning"}
_LOG_LEVELS.update({"error": "error", "fatal": "fatal", "critical": "fatal"})


def _str(value: typing.Any, limit: int = 500) -> str | None:
	"""A value fit for a text column: str (repaired, cut to ``limit``), numbers as text, anything else None."""
	if isinstance(value, bool) or value is None:
		return None
	if isinstance(value, (int, float)):
		value = str(value)
	if not isinstance(value, str):
		return None
	return clean_text(value[:limit])


def _id(value: typing.Any, limit: int = 64) -> str | None:
	"""An id (event, trace, span): a non-empty string, else None."""
	return _str(value, limit) or None


def _json(value: typing.Any) -> str:
	return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclasses.dataclass
class _Row:
	"""One item, processed and ready to insert."""

	type: str
	payload: bytes
	item_header: str
	sent: bytes | None = None
	event_id: str | None = None
	level: str | None = None
	release: str | None = None
	environment: str | None = None
	title: str | None = None
	exception_type: str | None = None
	trace_id: str | None = None
	tags: dict[str, str] = dataclasses.field(default_factory=dict)
	parent_event_id: str | None = None
	grouping: typing.Any = None
	logs: list[tuple] = dataclasses.field(default_factory=list)
	spans: list[tuple] = dataclasses.field(default_factory=list)
	check_in: tuple | None = None


def _trace_header(envelope: Envelope) -> dict:
	trace = envelope.headers.get("trace")
	return trace if isinstance(trace, dict) else {}


def _log_row(record: dict, default_release: str | None, default_environment: str | None) -> tuple:
	attrs = attributes(record.get("attributes"))
	severity = record.get("severity_number")
	return (
		to_seconds(record.get("timestamp")),
		_LOG_LEVELS.get(str(record.get("level", "")).lower(), level(record.get("level"), "info")),
		severity if isinstance(severity, int) and not isinstance(severity, bool) else None,
		_str(record.get("body"), 100_000) or "",
		_id(record.get("trace_id"), 64),
		_id(record.get("span_id"), 32),
		_str(attrs.get("sentry.release")) or default_release,
		_str(attrs.get("sentry.environment")) or default_environment,
		_json(attrs),
	)


def _span_row(span: dict, default_release: str | None, default_environment: str | None) -> tuple:
	attrs = attributes(span.get("attributes") or span.get("data"))
	end = to_seconds(span.get("end_timestamp", span.get("timestamp")))
	name = span.get("name") or span.get("description") or attrs.get("sentry.name")
	status = span.get("status")
	if isinstance(status, dict):
		status = status.get("message") or status.get("code")
	return (
		_id(span.get("trace_id"), 64),
		_id(span.get("span_id"), 32),
		_id(span.get("parent_span_id"), 32),
		_str(name) or "",
		_str(span.get("op") or attrs.get("sentry.op")),
		to_seconds(span.get("start_timestamp")),
		end,
		_id(status, 64),
		1 if span.get("is_segment") is True else 0,
		_str(attrs.get("sentry.release")) or default_release,
		_str(attrs.get("sentry.environment")) or default_environment,
		_json(attrs),
	)


def _list(value: typing.Any) -> list:
	return value if isinstance(value, list) else []


def _otel_value(value: typing.Any) -> typing.Any:
	if not isinstance(value, dict) or not value:
		return value
	kind, found = next(iter(value.items()))
	if kind == "intValue":
		try:
			return int(found)
		except (TypeError, ValueError):
			return found
	return found


def _from_otel_log(record: dict) -> dict:
	"""A log record of sentry-sdk before 2.28 (item type ``otel_log``, OpenTelemetry's shape) in Sentry's."""
	nanos = record.get("timeUnixNano")
	try:
		timestamp = int(nanos) / 1e9 if nanos is not None else None
	except (TypeError, ValueError):
		timestamp = None
	attributes = {}
	for attribute in _list(record.get("attributes")):
		if isinstance(attribute, dict) and isinstance(attribute.get("key"), str):
			attributes[attribute["key"]] = _otel_value(attribute.get("value"))
	body = record.get("body")
	return {
		"timestamp": timestamp,
		"level": record.get("severityText"),
		"severity_number": record.get("severityNumber"),
		"body": _otel_value(body) if isinstance(body, dict) else body,
		"trace_id": record.get("traceId"),
		"attributes": attributes,
	}


def _records(value: typing.Any) -> list[dict]:
	"""The records of a log or span container (``{"items": [...]}``), or a single object."""
	if isinstance(value, dict) and isinstance(value.get("items"), list):
		return [r for r in value["items"] if isinstance(r, dict)]
	if isinstance(value, dict):
		return [value]
	if isinstance(value, list):
		return [r for r in value if isinstance(r, dict)]
	return []


class StorageError(ValueError):
	"""The storage path is a file that is not the collector's SQLite database; the message names it."""


class Store:
	"""
	The collector's storage. Thread-safe; one connection per store object.

	Args:
		path: the SQLite file (``":memory:"`` for a throw-away store).
		max_age: delete items older than this many seconds (0: keep).
		max_count: keep at most this many items, the newest (0: no limit).
		normalizer: how event payloads are normalized (default: Relay's when installed, see `normalize`).
	"""

	def __init__(self, path: str, max_age: float = 0.0, max_count: int = 0, normalizer: Normalizer | None = None):
		self.Path = path
		self.MaxAge = max_age
		self.MaxCount = max_count
		self.Normalizer = normalizer or Normalizer()
		self._lock = threading.RLock()
		self._batch = 0  # > 0 inside `batch()`: one transaction, a savepoint per envelope
		self._db = self._open(path)
		self._inserts = 0

	def _open(self, path: str) -> sqlite3.Connection:
		db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
		db.row_factory = sqlite3.Row
		try:
			version = db.execute("PRAGMA user_version").fetchone()[0]
		except sqlite3.DatabaseError as e:  # "file is not a database": another file given as the storage
			db.close()
			raise StorageError("{!r} is not a storage file of the collector (SQLite): {}".format(path, e)) from None
		has_items = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone() is not None
		if has_items and version != SCHEMA_VERSION and path != ":memory:":
			db.close()
			os.replace(path, path + ".v{}".format(version or 1))
			for suffix in ("-wal", "-shm"):
				if os.path.exists(path + suffix):
					os.remove(path + suffix)
			db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
			db.row_factory = sqlite3.Row
		if path != ":memory:":
			db.execute("PRAGMA journal_mode=WAL")
			# In WAL mode NORMAL keeps every committed transaction across a crash of the process.
			db.execute("PRAGMA synchronous=NORMAL")
			# Fewer checkpoints (each one syncs the file): the WAL may grow to ~40 MB between them.
			db.execute("PRAGMA wal_autocheckpoint=10000")
		db.executescript(_SCHEMA)
		db.execute("PRAGMA user_version = {}".format(SCHEMA_VERSION))
		return db

	def close(self) -> None:
		with self._lock:
			self._db.close()

	# Writing

	def add(self, envelope: Envelope, project: str | None, received: float | None = None) -> list[int]:
		"""Store every item of the envelope in one transaction; return the row ids."""
		return self.add_many([(envelope, project, received)])[0]

	def add_many(self, batch: list[tuple[Envelope, str | None, float | None]]) -> list[list[int]]:
		"""
		Store several envelopes in one transaction (one commit); return the row ids of each envelope's items.

		Raises:
			EnvelopeError: an item's content cannot be stored (e.g. nested too deeply); nothing is stored.
		"""
		return self.add_prepared([self.prepare(envelope, project, received) for envelope, project, received in batch])

	def prepare(self, envelope: Envelope, project: str | None, received: float | None = None) -> typing.Any:
		"""
		The work of storing an envelope that needs no database (normalization, grouping), for
		`add_prepared`; thread-safe.

		Raises:
			EnvelopeError: an item's content cannot be stored.
		"""
		rows = [self._process(item, envelope) for item in envelope.items]
		return (envelope, project, time.time() if received is None else received, rows)

	def add_prepared(self, prepared: list[typing.Any]) -> list[list[int]]:
		"""
		Store envelopes made ready by `prepare` in one transaction; return each one's row ids. Inside `batch()`
		they join the batch's transaction (all or none of them), committed when the batch ends.
		"""
		result = []
		with self._lock:
			begin, commit, rollback = (
				("SAVEPOINT envelope", "RELEASE envelope", "ROLLBACK TO envelope")
				if self._batch
				else ("BEGIN", "COMMIT", "ROLLBACK")
			)
			self._db.execute(begin)
			try:
				pending: dict[str, dict] = {}
				for envelope, project, received, rows in prepared:
					header = _json(envelope.headers)
					result.append([self._insert(row, project, received, header, pending) for row in rows])
				self._update_issues(pending)
				self._db.execute(commit)
			except BaseException:
				self._db.execute(rollback)
				if self._batch:
					self._db.execute("RELEASE envelope")
				raise
			self._inserts += len(prepared)
			if self._inserts >= 100 and not self._batch:
				self._inserts = 0
				self._apply_retention_locked()
		return result

	@contextlib.contextmanager
	def batch(self) -> typing.Iterator[None]:
		"""
		Group the `add` calls made inside into one transaction with one commit at the end (the collector's
		writer thread stores each batch of received envelopes this way). An envelope whose `add` raises is left
		out and the others stay; an error of the commit itself raises here and stores none of them.
		"""
		with self._lock:
			self._db.execute("BEGIN")
			self._batch += 1
			try:
				yield
			except BaseException:
				self._batch -= 1
				self._db.execute("ROLLBACK")
				raise
			self._batch -= 1
			try:
				self._db.execute("COMMIT")
			except BaseException:
				self._db.execute("ROLLBACK")
				raise
			if self._inserts >= 100:
				self._inserts = 0
				self._apply_retention_locked()

	def _process(self, item: Item, envelope: Envelope) -> _Row:
		trace_header = _trace_header(envelope)
		default_release = _str(trace_header.get("release"))
		default_environment = _str(trace_header.get("environment"))
		envelope_event_id = _id(envelope.headers.get("event_id"), 64)
		row = _Row(type=clean_text(item.type[:100]), payload=item.payload, item_header=_json(item.headers))
		row.release, row.environment = default_release, default_environment
		data = item.json
		if item.type in EVENT_LIKE and isinstance(data, dict):
			try:
				event = self.Normalizer.event(data, item.type, raw=item.payload)
				row.payload = _json(event).encode("utf-8")
				row.sent = item.payload
			except RecursionError:
				raise EnvelopeError("{} item is nested too deeply".format(item.type))
			row.event_id = _id(event.get("event_id"), 64) or envelope_event_id
			default_level = "info" if item.type in ("transaction", "feedback") else "error"
			row.level = level(event.get("level"), default_level)
			row.release = _str(event.get("release")) or default_release
			row.environment = _str(event.get("environment")) or default_environment
			contexts = event.get("contexts") if isinstance(event.get("contexts"), dict) else {}
			trace = contexts.get("trace") if isinstance(contexts.get("trace"), dict) else {}
			row.trace_id = _id(trace.get("trace_id"), 64)
			row.tags = payload.tags(event)
			if item.type == "feedback":
				feedback = contexts.get("feedback") if isinstance(contexts.get("feedback"), dict) else {}
				row.title = _str(feedback.get("message")) or "<feedback>"
				row.parent_event_id = _id(feedback.get("associated_event_id"), 64)
			else:
				row.title = _str(payload.title(event, item.type))
				chain = payload.exceptions(event)
				row.exception_type = _str(chain[-1].get("type")) if chain else None
			if item.type == "event":
				row.grouping = group(event)
			return row
		if item.type in ("log", "otel_log"):
			records = _records(data) if item.type == "log" else [_from_otel_log(r) for r in _records(data)]
			row.logs = [_log_row(r, default_release, default_environment) for r in records]
			row.title = "{} log record{}".format(len(records), "" if len(records) == 1 else "s")
			if row.logs:
				row.release, row.environment, row.trace_id = row.logs[0][6], row.logs[0][7], row.logs[0][4]
				row.level = max((r[1] for r in row.logs), key=lambda lv: -LEVEL_ORDER.index(lv))
			return row
		if item.type == "span":
			spans = _records(data)
			row.spans = [_span_row(s, default_release, default_environment) for s in spans]
			if row.spans:
				segment = next((s for s in row.spans if s[8]), row.spans[0])
				row.title = segment[3] or "<span>"
				if len(row.spans) > 1:
					row.title = "{} (+{} spans)".format(row.title, len(row.spans) - 1)
				row.trace_id, row.release, row.environment = segment[0], segment[9], segment[10]
			else:
				row.title = "0 spans"
			return row
		if item.type == "check_in" and isinstance(data, dict):
			duration = data.get("duration")
			duration = to_seconds(duration) if not isinstance(duration, bool) else None
			row.release = _str(data.get("release")) or default_release
			row.environment = _str(data.get("environment")) or default_environment
			slug, status = _str(data.get("monitor_slug"), 200), _str(data.get("status"), 50)
			row.check_in = (_id(data.get("check_in_id"), 64), slug, status, duration, row.release, row.environment)
			row.title = "{}: {}".format(slug or "<monitor>", status or "?")
			row.level = "error" if status in ("error", "timeout") else "info"
			contexts = data.get("contexts") if isinstance(data.get("contexts"), dict) else {}
			trace = contexts.get("trace") if isinstance(contexts.get("trace"), dict) else {}
			row.trace_id = _id(trace.get("trace_id"), 64)
			return row
		if item.type in ("session", "sessions") and isinstance(data, dict):
			attrs = data.get("attrs") if isinstance(data.get("attrs"), dict) else {}
			row.release = _str(attrs.get("release")) or default_release
			row.environment = _str(attrs.get("environment")) or default_environment
			if item.type == "session":
				row.title = "session {}".format(_str(data.get("status"), 50) or "ok")
			else:
				started = sum(
					a.get("exited", 0) + a.get("errored", 0) + a.get("abnormal", 0) + a.get("crashed", 0)
					for a in _list(data.get("aggregates"))
					if isinstance(a, dict) and all(isinstance(a.get(k, 0), int) for k in _AGGREGATE_KEYS)
				)
				row.title = "sessions: {} ended".format(started)
			return row
		if item.type == "client_report" and isinstance(data, dict):
			discarded = sum(
				d.get("quantity", 0)
				for d in _list(data.get("discarded_events"))
				if isinstance(d, dict) and isinstance(d.get("quantity", 0), int)
			)
			row.title = "client report: {} discarded".format(discarded)
			return row
		if item.type == "user_report" and isinstance(data, dict):
			row.title = _str(data.get("comments")) or "<user report>"
			row.parent_event_id = _id(data.get("event_id"), 64) or envelope_event_id
			return row
		if item.type in ("profile", "profile_chunk") and isinstance(data, dict):
			transaction = data.get("transaction")
			if not isinstance(transaction, dict):
				transactions = data.get("transactions")
				transaction = transactions[0] if isinstance(transactions, list) and transactions else {}
				transaction = transaction if isinstance(transaction, dict) else {}
			row.parent_event_id = _id(transaction.get("id"), 64) or (
				envelope_event_id if item.type == "profile" else None
			)
			row.trace_id = _id(transaction.get("trace_id"), 64)
			row.title = "profile of {}".format(_str(transaction.get("name")) or "?")
			row.release = _str(data.get("release")) or default_release
			row.environment = _str(data.get("environment")) or default_environment
			return row
		if item.type == "attachment":
			row.title = _str(item.headers.get("filename")) or "<attachment>"
			row.parent_event_id = envelope_event_id
			return row
		row.title = row.type
		if item.type in LINKED_TYPES:
			row.parent_event_id = envelope_event_id
		return row

	def _insert(self, row: _Row, project: str | None, received: float, header: str, pending: dict) -> int:
		db = self._db
		issue_id = None
		if row.grouping is not None:
			issue_id = self._issue_id(row, received, pending)
		cursor = db.execute(
			"INSERT INTO items (received, project, type, event_id, level, release, environment, title,"
			" exception_type, trace_id, tags, issue_id, parent_event_id, size, envelope_header, item_header, payload,"
			" sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			(
				received,
				_str(project, 50),
				row.type,
				row.event_id,
				row.level,
				row.release,
				row.environment,
				row.title,
				row.exception_type,
				row.trace_id,
				_json(row.tags) if row.tags else None,
				issue_id,
				row.parent_event_id,
				len(row.payload),
				header,
				row.item_header,
				row.payload,
				row.sent,
			),
		)
		item_id = cursor.lastrowid
		if row.logs:
			db.executemany(
				"INSERT INTO logs (item_id, timestamp, level, severity_number, body, trace_id, span_id, release,"
				" environment, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				[(item_id, *r) for r in row.logs],
			)
		if row.spans:
			db.executemany(
				"INSERT INTO spans (item_id, trace_id, span_id, parent_span_id, name, op, start, end, status,"
				" is_segment, release, environment, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				[(item_id, *r) for r in row.spans],
			)
		if row.check_in is not None:
			db.execute(
				"INSERT INTO check_ins (item_id, received, check_in_id, monitor_slug, status, duration, release,"
				" environment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
				(item_id, received, *row.check_in),
			)
		return item_id

	def _issue_id(self, row: _Row, received: float, pending: dict[str, dict]) -> int:
		"""The issue of ``row``, created when new; its counters are updated once per batch (`_update_issues`)."""
		grouping = row.grouping
		issue = pending.get(grouping.Hash)
		if issue is None:
			found = self._db.execute(
				"SELECT id, releases, environments FROM issues WHERE hash = ?", (grouping.Hash,)
			).fetchone()
			if found is None:
				cursor = self._db.execute(
					"INSERT INTO issues (hash, grouping, title, culprit, level, count, first_seen, last_seen,"
					" releases, environments) VALUES (?, ?, ?, ?, ?, 0, ?, ?, '[]', '[]')",
					(
						grouping.Hash,
						_json(list(grouping.Components)),
						row.title,
						_str(grouping.Culprit),
						row.level,
						received,
						received,
					),
				)
				found = {"id": cursor.lastrowid, "releases": "[]", "environments": "[]"}
			issue = pending[grouping.Hash] = {
				"id": found["id"],
				"count": 0,
				"first": received,
				"last": received,
				"releases": json.loads(found["releases"]),
				"environments": json.loads(found["environments"]),
			}
		issue["count"] += 1
		issue["first"] = min(issue["first"], received)
		if received >= issue["last"]:
			issue["last"], issue["title"], issue["level"] = received, row.title, row.level
		if row.release and row.release not in issue["releases"]:
			issue["releases"].append(row.release)
		if row.environment and row.environment not in issue["environments"]:
			issue["environments"].append(row.environment)
		return issue["id"]

	def _update_issues(self, pending: dict[str, dict]) -> None:
		self._db.executemany(
			"UPDATE issues SET count = count + ?, first_seen = MIN(first_seen, ?), last_seen = MAX(last_seen, ?),"
			" title = COALESCE(?, title), level = COALESCE(?, level), releases = ?, environments = ? WHERE id = ?",
			[
				(
					i["count"],
					i["first"],
					i["last"],
					i.get("title"),
					i.get("level"),
					_json(i["releases"]),
					_json(i["environments"]),
					i["id"],
				)
				for i in pending.values()
			],
		)

	def apply_retention(self) -> int:
		"""Delete what is past ``max_age`` / ``max_count``; return how many items went."""
		with self._lock:
			return self._apply_retention_locked()

	def _apply_retention_locked(self) -> int:
		# Both without scanning the table: items are stored in the order received (ids ascending), and only
		# the oldest are ever deleted, so the ids are contiguous.
		cutoff = 0
		if self.MaxAge > 0:
			oldest = time.time() - self.MaxAge
			row = self._db.execute("SELECT received FROM items ORDER BY id LIMIT 1").fetchone()
			if row is not None and row[0] < oldest:  # then walk only the rows that go
				first_kept = self._db.execute(
					"SELECT id FROM items WHERE received >= ? ORDER BY id LIMIT 1", (oldest,)
				).fetchone()
				last = self._db.execute("SELECT MAX(id) FROM items").fetchone()[0]
				cutoff = max(cutoff, first_kept[0] - 1 if first_kept else last)
		if self.MaxCount > 0:
			row = self._db.execute("SELECT MIN(id), MAX(id) FROM items").fetchone()
			if row[0] is not None and row[1] - row[0] + 1 > self.MaxCount:
				cutoff = max(cutoff, row[1] - self.MaxCount)
		if not cutoff:
			return 0
		self._db.execute("BEGIN")
		try:
			issues = [
				r[0]
				for r in self._db.execute(
					"SELECT DISTINCT issue_id FROM items WHERE id <= ? AND issue_id IS NOT NULL", (cutoff,)
				)
			]
			deleted = self._db.execute("DELETE FROM items WHERE id <= ?", (cutoff,)).rowcount
			for table in ("logs", "spans", "check_ins"):
				self._db.execute("DELETE FROM {} WHERE item_id <= ?".format(table), (cutoff,))
			for issue_id in issues:
				left = self._db.execute(
					"SELECT COUNT(*), MIN(received) FROM items WHERE issue_id = ?", (issue_id,)
				).fetchone()
				if left[0]:
					self._db.execute(
						"UPDATE issues SET count = ?, first_seen = ? WHERE id = ?", (left[0], left[1], issue_id)
					)
				else:
					self._db.execute("DELETE FROM issues WHERE id = ?", (issue_id,))
			self._db.execute("COMMIT")
		except BaseException:
			self._db.execute("ROLLBACK")
			raise
		return deleted

	def clear(self) -> None:
		"""Delete everything stored (items, issues, logs, spans, check-ins)."""
		with self._lock:
			self._db.execute("BEGIN")
			for table in ("items", "issues", "logs", "spans", "check_ins"):
				self._db.execute("DELETE FROM {}".format(table))
			self._db.execute("COMMIT")

	# Reading

	def _query(self, sql: str, params: typing.Sequence[typing.Any] = ()) -> list[sqlite3.Row]:
		with self._lock:
			return self._db.execute(sql, params).fetchall()

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
		issue_id: int | None = None,
		trace_id: str | None = None,
		parent_event_id: str | None = None,
		after_id: int | None = None,
		limit: int = 50,
		offset: int = 0,
		newest_first: bool = True,
	) -> list[dict[str, typing.Any]]:
		"""
		Item summaries matching every given filter (``text``: a substring of the title or exception type,
		case-insensitive; ``since``/``until``: ``received`` in Unix seconds, ``until`` exclusive), by id.

		Each summary: ``id``, ``received``, ``project``, ``type`` (the envelope item type), ``event_id``,
		``level``, ``release``, ``environment``, ``title``, ``exception_type``, ``trace_id``, ``tags`` (dict),
		``issue_id`` (error/message events), ``parent_event_id`` (the event an attachment, profile or
		feedback belongs to), ``size`` (bytes of the stored payload).
		"""
		where, params = _filters(
			type=type,
			level=level,
			tag=tag,
			text=text,
			since=since,
			until=until,
			release=release,
			environment=environment,
			event_id=event_id,
			issue_id=issue_id,
			trace_id=trace_id,
			parent_event_id=parent_event_id,
		)
		if after_id is not None:
			where.append("id > ?")
			params.append(after_id)
		sql = "SELECT {} FROM items".format(", ".join(SUMMARY_COLUMNS))
		if where:
			sql += " WHERE " + " AND ".join(where)
		sql += " ORDER BY id {} LIMIT ? OFFSET ?".format("DESC" if newest_first else "ASC")
		params += [_bounded(limit), _bounded(offset)]
		return [_row(r) for r in self._query(sql, params)]

	def get(self, item_id: int, sent: bool = False) -> dict[str, typing.Any] | None:
		"""
		One item: its summary (see `list`) plus ``envelope_header``, ``item_header`` (dicts), ``payload``
		(the parsed JSON of JSON items — events, transactions and feedback normalized, see `normalize`, or
		exactly as the client sent them with ``sent=True``, as tests of what an SDK sends need; the text of
		other items when it is UTF-8, else None: fetch the bytes with `attachment`), ``filename`` and ``content_type`` (attachments),
		``linked`` (summaries of the attachments, profiles and feedback that belong to this event), and
		``issue`` (the issue of an error/message event, see `issue`). None when there is no such item.
		"""
		item_id = _bounded(item_id)
		rows = self._query(
			"SELECT {}, envelope_header, item_header, {} FROM items WHERE id = ?".format(
				", ".join(SUMMARY_COLUMNS), "COALESCE(sent, payload) AS payload" if sent else "payload"
			),
			(item_id,),
		)
		if not rows:
			return None
		row = rows[0]
		result = _row(row)
		result["envelope_header"] = json.loads(row["envelope_header"])
		result["item_header"] = json.loads(row["item_header"])
		data = bytes(row["payload"])
		try:
			text = data.decode("utf-8")
		except UnicodeDecodeError:
			text = None
		result["payload"] = text
		if text is not None and result["type"] not in ("attachment",):
			try:
				result["payload"] = json.loads(text)
			except ValueError:
				pass
		header = result["item_header"]
		result["filename"] = header.get("filename") if isinstance(header.get("filename"), str) else None
		result["content_type"] = header.get("content_type") if isinstance(header.get("content_type"), str) else None
		result["linked"] = []
		if result["event_id"] and result["type"] in ("event", "transaction"):
			result["linked"] = self.list(limit=1000, newest_first=False, parent_event_id=result["event_id"])
		result["issue"] = self.issue(result["issue_id"]) if result["issue_id"] else None
		return result

	def attachment(self, item_id: int) -> dict[str, typing.Any] | None:
		"""
		The exact bytes of an item as received (for attachments: the file): ``{"data": bytes, "filename":
		str | None, "content_type": str, "type": item type}``; None when there is no such item. JSON items
		give their stored (normalized) JSON.
		"""
		rows = self._query("SELECT type, item_header, payload FROM items WHERE id = ?", (_bounded(item_id),))
		if not rows:
			return None
		header = json.loads(rows[0]["item_header"])
		filename = header.get("filename") if isinstance(header.get("filename"), str) else None
		content_type = header.get("content_type") if isinstance(header.get("content_type"), str) else None
		return {
			"data": bytes(rows[0]["payload"]),
			"filename": filename,
			"content_type": content_type or "application/octet-stream",
			"type": rows[0]["type"],
		}

	def count(self, type: str | None = None) -> int:
		"""How many items (of ``type``) are stored."""
		if type is None:
			return self._query("SELECT COUNT(*) FROM items")[0][0]
		return self._query("SELECT COUNT(*) FROM items WHERE type = ?", (type,))[0][0]

	def issues(
		self,
		level: str | None = None,
		tag: tuple[str, str] | None = None,
		text: str | None = None,
		since: float | None = None,
		until: float | None = None,
		release: str | None = None,
		environment: str | None = None,
		limit: int = 50,
		offset: int = 0,
		sort: str = "last_seen",
	) -> list[dict[str, typing.Any]]:
		"""
		Issues (grouped error and message events), most recently seen first (``sort``: ``last_seen``,
		``first_seen`` or ``count``, each descending). With filters (the same as `list`'s), an issue is
		listed when some of its stored events match, and ``count``/``first_seen``/``last_seen`` are those of
		the matching events; without, they are of all events received (retention lowers them).

		Each issue: ``id``, ``title`` (of its latest event), ``culprit`` (``"module in function"``),
		``level`` (of its latest event), ``count``, ``first_seen``, ``last_seen``, ``releases`` and
		``environments`` (lists, in the order first seen), ``grouping`` (the components its key was made
		of, see `grouping`), ``latest_item_id`` (its newest stored event).
		"""
		if sort not in ("last_seen", "first_seen", "count"):
			raise ValueError("sort must be last_seen, first_seen or count")
		where, params = _filters(
			type="event",
			level=level,
			tag=tag,
			text=text,
			since=since,
			until=until,
			release=release,
			environment=environment,
		)
		where.append("issue_id IS NOT NULL")
		filtered = any(v is not None for v in (level, tag, text, since, until, release, environment))
		if filtered:
			sql = (
				"SELECT issues.*, m.n AS n, m.first AS first, m.last AS last, m.latest AS latest FROM issues JOIN"
				" (SELECT issue_id, COUNT(*) AS n, MIN(received) AS first, MAX(received) AS last, MAX(id) AS latest"
				" FROM items WHERE {} GROUP BY issue_id) AS m ON m.issue_id = issues.id"
			).format(" AND ".join(where))
			order = {"last_seen": "m.last", "first_seen": "m.first", "count": "m.n"}[sort]
		else:
			sql = (
				"SELECT issues.*, count AS n, first_seen AS first, last_seen AS last,"
				" (SELECT MAX(id) FROM items WHERE items.issue_id = issues.id) AS latest FROM issues"
			)
			params = []
			order = {"last_seen": "last_seen", "first_seen": "first_seen", "count": "count"}[sort]
		sql += " ORDER BY {} DESC, issues.id DESC LIMIT ? OFFSET ?".format(order)
		params += [_bounded(limit), _bounded(offset)]
		return [_issue(r) for r in self._query(sql, params)]

	def issue(self, issue_id: int) -> dict[str, typing.Any] | None:
		"""One issue (see `issues`, all-time counts), or None."""
		rows = self._query(
			"SELECT issues.*, count AS n, first_seen AS first, last_seen AS last,"
			" (SELECT MAX(id) FROM items WHERE items.issue_id = issues.id) AS latest FROM issues WHERE id = ?",
			(_bounded(issue_id),),
		)
		return _issue(rows[0]) if rows else None

	def logs(
		self,
		level: str | None = None,
		text: str | None = None,
		attribute: tuple[str, str] | None = None,
		trace_id: str | None = None,
		release: str | None = None,
		environment: str | None = None,
		since: float | None = None,
		until: float | None = None,
		after_id: int | None = None,
		limit: int = 100,
		offset: int = 0,
		newest_first: bool = True,
	) -> list[dict[str, typing.Any]]:
		"""
		Log records (``sentry_sdk.logger`` / ``Sentry.logger``, one row per record), filtered by ``level``
		(``debug``, ``info``, ``warning``, ``error``, ``fatal``; ``trace`` is stored as ``debug``, ``warn`` as
		``warning``), ``text`` (substring of the body, case-insensitive), ``attribute`` (``(key, value)``,
		compared as text), trace, release, environment, ``since``/``until`` (the record's timestamp).

		Each record: ``id``, ``item_id`` (the envelope item it came in), ``timestamp``, ``level``,
		``severity_number``, ``body``, ``trace_id``, ``span_id``, ``release``, ``environment``,
		``attributes`` (dict of plain values, e.g. ``{"sentry.sdk.name": "sentry.javascript.node"}``).
		"""
		where: list[str] = []
		params: list[typing.Any] = []
		for column, value in (
			("level", level),
			("trace_id", trace_id),
			("release", release),
			("environment", environment),
		):
			if value is not None:
				where.append("{} = ?".format(column))
				params.append(value)
		if text:
			where.append("body LIKE ? ESCAPE '\\'")
			params.append(_like(text))
		if attribute is not None:
			where.append("CAST(json_extract(attributes, ?) AS TEXT) = ?")
			params += [_json_path(attribute[0]), attribute[1]]
		if since is not None:
			where.append("timestamp >= ?")
			params.append(since)
		if until is not None:
			where.append("timestamp < ?")
			params.append(until)
		if after_id is not None:
			where.append("id > ?")
			params.append(after_id)
		sql = "SELECT * FROM logs"
		if where:
			sql += " WHERE " + " AND ".join(where)
		sql += " ORDER BY id {} LIMIT ? OFFSET ?".format("DESC" if newest_first else "ASC")
		params += [_bounded(limit), _bounded(offset)]
		result = []
		for r in self._query(sql, params):
			record = dict(r)
			record["attributes"] = json.loads(record["attributes"]) if record["attributes"] else {}
			result.append(record)
		return result

	def trace(self, trace_id: str) -> dict[str, typing.Any] | None:
		"""
		One trace, from its transactions and v2 spans together: ``{"trace_id", "start", "end", "duration"
		(seconds), "name" (of the root), "spans": [...], "errors": [item summaries of events in the trace]}``,
		or None when nothing of it is stored.

		Each span: ``span_id``, ``parent_span_id``, ``name`` (transaction name or span description),
		``op``, ``start``, ``end``, ``duration`` (seconds or None), ``status``, ``item_id`` (where it was
		stored), ``source`` (``"transaction"`` for a transaction's root, ``"transaction_span"`` for its child
		spans, ``"span"`` for v2 spans), ``is_segment``, ``attributes`` (v2 spans; ``data`` of a
		transaction's spans). Sorted by start.
		"""
		spans: list[dict[str, typing.Any]] = []
		for row in self._query(
			"SELECT id, payload FROM items WHERE trace_id = ? AND type = 'transaction' ORDER BY id", (trace_id,)
		):
			try:
				txn = json.loads(bytes(row["payload"]))
			except ValueError:
				continue
			spans.extend(_transaction_spans(txn, row["id"]))
		for row in self._query("SELECT * FROM spans WHERE trace_id = ? ORDER BY id", (trace_id,)):
			spans.append(
				{
					"span_id": row["span_id"],
					"parent_span_id": row["parent_span_id"],
					"name": row["name"],
					"op": row["op"],
					"start": row["start"],
					"end": row["end"],
					"duration": _duration(row["start"], row["end"]),
					"status": row["status"],
					"item_id": row["item_id"],
					"source": "span",
					"is_segment": bool(row["is_segment"]),
					"attributes": json.loads(row["attributes"]) if row["attributes"] else {},
				}
			)
		if not spans:
			return None
		spans.sort(key=lambda s: (s["start"] is None, s["start"] or 0.0))
		ids = {s["span_id"] for s in spans}
		roots = [s for s in spans if s["parent_span_id"] not in ids]
		starts = [s["start"] for s in spans if s["start"] is not None]
		ends = [s["end"] for s in spans if s["end"] is not None]
		start, end = (min(starts) if starts else None), (max(ends) if ends else None)
		return {
			"trace_id": trace_id,
			"name": (roots or spans)[0]["name"],
			"start": start,
			"end": end,
			"duration": _duration(start, end),
			"spans": spans,
			"errors": self.list(type="event", trace_id=trace_id, limit=1000, newest_first=False),
		}

	def traces(self, limit: int = 50, offset: int = 0) -> list[dict[str, typing.Any]]:
		"""
		The most recent traces (by the last item stored for them): each as `trace` gives it, without
		``spans`` and ``errors`` but with ``span_count`` and ``error_count``.
		"""
		rows = self._query(
			"SELECT trace_id, MAX(item_id) AS last FROM (SELECT trace_id, id AS item_id FROM items"
			" WHERE type = 'transaction' AND trace_id IS NOT NULL UNION ALL SELECT trace_id, item_id FROM spans"
			" WHERE trace_id IS NOT NULL) GROUP BY trace_id ORDER BY last DESC LIMIT ? OFFSET ?",
			(_bounded(limit), _bounded(offset)),
		)
		result = []
		for row in rows:
			trace = self.trace(row["trace_id"])
			if trace is None:
				continue
			trace["span_count"] = len(trace.pop("spans"))
			trace["error_count"] = len(trace.pop("errors"))
			result.append(trace)
		return result

	def check_ins(
		self,
		monitor_slug: str | None = None,
		status: str | None = None,
		limit: int = 100,
		offset: int = 0,
	) -> list[dict[str, typing.Any]]:
		"""
		Cron check-ins, newest first: ``id``, ``item_id``, ``received``, ``check_in_id``, ``monitor_slug``,
		``status`` (``in_progress``, ``ok``, ``error``, ``timeout``), ``duration`` (seconds or None),
		``release``, ``environment``.
		"""
		where, params = [], []
		for column, value in (("monitor_slug", monitor_slug), ("status", status)):
			if value is not None:
				where.append("{} = ?".format(column))
				params.append(value)
		sql = "SELECT * FROM check_ins"
		if where:
			sql += " WHERE " + " AND ".join(where)
		sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
		return [dict(r) for r in self._query(sql, [*params, _bounded(limit), _bounded(offset)])]

	def summary(self) -> dict[str, typing.Any]:
		"""
		Sessions and client reports, summed up::

			{
				"items": {type: count},
				"sessions": {
					"updates": n, "by_status": {status: n},
					"aggregates": {"exited": n, "errored": n, "abnormal": n, "crashed": n},
					"releases": [...], "environments": [...],
				},
				"client_reports": {"reports": n, "discarded": [{"reason", "category", "quantity"}]},
			}

		``by_status`` counts session updates (``session`` items) by their status; ``aggregates`` sums the
		``sessions`` items of server-mode SDKs; ``discarded`` sums what clients reported dropping.
		"""
		counts = {r[0]: r[1] for r in self._query("SELECT type, COUNT(*) FROM items GROUP BY type")}
		by_status: dict[str, int] = {}
		aggregates = dict.fromkeys(_AGGREGATE_KEYS, 0)
		releases: list[str] = []
		environments: list[str] = []
		discarded: dict[tuple[str, str], int] = {}
		reports = 0
		for row in self._query(
			"SELECT type, release, environment, payload FROM items"
			" WHERE type IN ('session', 'sessions', 'client_report') ORDER BY id"
		):
			try:
				data = json.loads(bytes(row["payload"]))
			except ValueError:
				continue
			if not isinstance(data, dict):
				continue
			if row["type"] == "client_report":
				reports += 1
				for entry in _list(data.get("discarded_events")):
					if isinstance(entry, dict) and isinstance(entry.get("quantity"), int):
						key = (str(entry.get("reason")), str(entry.get("category")))
						discarded[key] = discarded.get(key, 0) + entry["quantity"]
				continue
			if row["release"] and row["release"] not in releases:
				releases.append(row["release"])
			if row["environment"] and row["environment"] not in environments:
				environments.append(row["environment"])
			if row["type"] == "session":
				status = str(data.get("status") or "ok")
				by_status[status] = by_status.get(status, 0) + 1
			else:
				for aggregate in _list(data.get("aggregates")):
					if isinstance(aggregate, dict):
						for key in _AGGREGATE_KEYS:
							value = aggregate.get(key)
							if isinstance(value, int) and not isinstance(value, bool):
								aggregates[key] += value
		return {
			"items": counts,
			"sessions": {
				"updates": sum(by_status.values()),
				"by_status": by_status,
				"aggregates": aggregates,
				"releases": releases,
				"environments": environments,
			},
			"client_reports": {
				"reports": reports,
				"discarded": [
					{"reason": reason, "category": category, "quantity": quantity}
					for (reason, category), quantity in sorted(discarded.items())
				],
			},
		}


LEVEL_ORDER = ("fatal", "error", "warning", "info", "debug")
_AGGREGATE_KEYS = ("exited", "errored", "abnormal", "crashed")
_MAX_INT = 2**63 - 1


def _bounded(value: typing.Any) -> int:
	"""A whole number SQLite can bind (0 … 2**63-1)."""
	return max(0, min(int(value), _MAX_INT))


def _like(text: str) -> str:
	return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _json_path(key: str) -> str:
	return '$."{}"'.format(key.replace("\\", "\\\\").replace('"', '\\"'))


def _filters(**f: typing.Any) -> tuple[list[str], list[typing.Any]]:
	where: list[str] = []
	params: list[typing.Any] = []
	for column in ("type", "level", "release", "environment", "event_id", "issue_id", "trace_id"):
		value = f.get(column)
		if value is not None:
			where.append("{} = ?".format(column))
			params.append(_bounded(value) if column == "issue_id" else value)
	if f.get("parent_event_id") is not None:
		where.append("parent_event_id = ?")
		params.append(f["parent_event_id"])
	tag = f.get("tag")
	if tag is not None:
		where.append("json_extract(tags, ?) = ?")
		params += [_json_path(tag[0]), tag[1]]
	text = f.get("text")
	if text:
		where.append("(title LIKE ? ESCAPE '\\' OR exception_type LIKE ? ESCAPE '\\')")
		params += [_like(text), _like(text)]
	if f.get("since") is not None:
		where.append("received >= ?")
		params.append(f["since"])
	if f.get("until") is not None:
		where.append("received < ?")
		params.append(f["until"])
	return where, params


def _duration(start: float | None, end: float | None) -> float | None:
	return end - start if start is not None and end is not None else None


def _transaction_spans(txn: dict, item_id: int) -> list[dict[str, typing.Any]]:
	contexts = txn.get("contexts") if isinstance(txn.get("contexts"), dict) else {}
	trace = contexts.get("trace") if isinstance(contexts.get("trace"), dict) else {}
	start, end = to_seconds(txn.get("start_timestamp")), to_seconds(txn.get("timestamp"))
	result = [
		{
			"span_id": trace.get("span_id"),
			"parent_span_id": trace.get("parent_span_id"),
			"name": txn.get("transaction") or "<unnamed transaction>",
			"op": trace.get("op"),
			"start": start,
			"end": end,
			"duration": _duration(start, end),
			"status": trace.get("status"),
			"item_id": item_id,
			"source": "transaction",
			"is_segment": True,
			"attributes": trace.get("data") if isinstance(trace.get("data"), dict) else {},
		}
	]
	for span in _list(txn.get("spans")):
		if not isinstance(span, dict):
			continue
		s, e = to_seconds(span.get("start_timestamp")), to_seconds(span.get("timestamp"))
		result.append(
			{
				"span_id": span.get("span_id"),
				"parent_span_id": span.get("parent_span_id"),
				"name": span.get("description") or span.get("op") or "",
				"op": span.get("op"),
				"start": s,
				"end": e,
				"duration": _duration(s, e),
				"status": span.get("status"),
				"item_id": item_id,
				"source": "transaction_span",
				"is_segment": False,
				"attributes": span.get("data") if isinstance(span.get("data"), dict) else {},
			}
		)
	return result


def _row(row: sqlite3.Row) -> dict[str, typing.Any]:
	result = {column: row[column] for column in SUMMARY_COLUMNS}
	result["tags"] = json.loads(result["tags"]) if result["tags"] else {}
	return result


def _issue(row: sqlite3.Row) -> dict[str, typing.Any]:
	return {
		"id": row["id"],
		"title": row["title"],
		"culprit": row["culprit"],
		"level": row["level"],
		"count": row["n"],
		"first_seen": row["first"],
		"last_seen": row["last"],
		"releases": json.loads(row["releases"]),
		"environments": json.loads(row["environments"]),
		"grouping": json.loads(row["grouping"]) if row["grouping"] else [],
		"latest_item_id": row["latest"],
	}
