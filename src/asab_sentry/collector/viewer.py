"""
``asab-sentry events``: read what the collector stored, in a terminal or as JSON.

Every text that comes from an event is cleaned of terminal control sequences (`clean`) before it is printed,
and any stored content is shown as far as it makes sense, never with a traceback: the collector stores what
the protocol allows and more. Lines follow the terminal's width (80 columns when not writing to a terminal
and ``COLUMNS`` is not set), colours are used only on a terminal (``rich``, honouring ``NO_COLOR``), times
are local with their zone.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import sys
import textwrap
import typing
import urllib.error
import urllib.parse
import urllib.request

from .. import payload
from ..payload import as_dict as _dict
from ..payload import as_list as _list
from . import store as store_module
from .store import Store

WIDTH = 80

# Terminal control sequences, as ECMA-48 defines them: CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC strings,
# two-character escapes, and their 8-bit C1 forms.
_SEQUENCES = re.compile(
	r"""
	\x1b\[[0-?]*[\ -/]*[@-~]?
	| \x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?
	| \x1b[\ -/]*[0-~]?
	| \x9b[0-?]*[\ -/]*[@-~]?
	| [\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?
	""",
	re.VERBOSE,
)
# What is left that a terminal would act on or that reorders text (bidirectional overrides): shown escaped.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean(text: typing.Any) -> str:
	"""
	``text`` (any value; non-strings are converted with ``str``) safe to print on a terminal: control sequences
	(ANSI/VT colours and cursor moves, OSC titles, hyperlinks and clipboard writes, DCS...) removed, other control
	characters shown as ``\\xNN`` / ``\\uNNNN``, lone surrogates as U+FFFD. Tabs become two spaces; line breaks
	are kept (callers that want one line replace them).
	"""
	if not isinstance(text, str):
		try:
			text = str(text)
		except Exception:  # a str subclass or object from JSON cannot fail, but keep the promise
			return "?"
	text = text.replace("\r\n", "\n").replace("\t", "  ")
	text = _SEQUENCES.sub("", text)
	text = _CONTROLS.sub(lambda m: _escape(m.group()), text.replace("\r", "\n"))
	return _SURROGATES.sub("\ufffd", text)


def _escape(char: str) -> str:
	code = ord(char)
	return "\\x{:02x}".format(code) if code < 0x100 else "\\u{:04x}".format(code)


def terminal_width() -> int:
	"""Columns of the terminal (``COLUMNS`` first, then the terminal of stdout, else 80), at least 40."""
	return max(shutil.get_terminal_size((WIDTH, 24)).columns, 40)


# Reading stored values defensively: the collector accepts what the protocol allows (and clients send more).


def _number(value: typing.Any) -> float | None:
	if isinstance(value, bool):
		return None
	if isinstance(value, str):
		try:
			value = float(value)
		except ValueError:
			return None
	if isinstance(value, (int, float)) and math.isfinite(value):
		return float(value)
	return None


def _json(value: typing.Any) -> str:
	try:
		return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
	except (ValueError, TypeError):  # circular or non-string keys cannot come from JSON; be safe anyway
		return repr(value)


def _api_query(filters: dict[str, typing.Any]) -> str:
	"""The JSON API's query string for `Store.list` / `Store.issues` keyword filters (None: not given)."""
	query: dict[str, typing.Any] = {}
	for key, value in filters.items():
		if value is None:
			continue
		if key == "tag":
			query["tag"] = "{}:{}".format(*value)
		elif key == "text":
			query["q"] = value
		elif key == "after_id":
			query["after"] = value
		elif key == "newest_first":
			query["order"] = "desc" if value else "asc"
		else:
			query[key] = value
	return urllib.parse.urlencode(query)


class Source:
	"""Items from a storage file, or from a running collector's JSON API (``url``)."""

	def __init__(self, storage: str | None = None, url: str | None = None):
		self.Url = url.rstrip("/") if url else None
		self.Store = None
		if not url:
			if not storage or not os.path.isfile(storage):
				raise FileNotFoundError(
					"No storage file {!r}: run 'asab-sentry collector' (or the demo) first, or pass --storage / --url".format(
						storage
					)
				)
			self.Store = Store(storage)

	def list(self, **filters: typing.Any) -> list[dict[str, typing.Any]]:
		"""Item summaries; filters: those of `Store.list`."""
		if self.Store is not None:
			return self.Store.list(**filters)
		return self._get("/api/0/items?" + _api_query(filters))["items"]

	def issues(self, **filters: typing.Any) -> list[dict[str, typing.Any]]:
		"""Issues with their counts; filters: those of `Store.issues`."""
		if self.Store is not None:
			return self.Store.issues(**filters)
		return self._get("/api/0/issues?" + _api_query(filters))["issues"]

	def get(self, item_id: int) -> dict[str, typing.Any] | None:
		if self.Store is not None:
			return self.Store.get(item_id)
		try:
			return self._get("/api/0/items/{}".format(int(item_id)))
		except urllib.error.HTTPError as e:
			if e.code == 404:
				return None
			raise

	def _get(self, path: str) -> typing.Any:
		with urllib.request.urlopen(self.Url + path, timeout=10) as response:
			return json.loads(response.read())


# Time


def _moment(value: typing.Any) -> datetime.datetime | None:
	"""A stored timestamp (unix seconds, maybe as a string, or RFC 3339) as an aware local datetime."""
	seconds = _number(value)
	try:
		if seconds is not None:
			return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).astimezone()
		if isinstance(value, str):
			moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
			if moment.tzinfo is None:
				moment = moment.replace(tzinfo=datetime.timezone.utc)
			return moment.astimezone()
	except (ValueError, OverflowError, OSError):
		pass
	return None


def _time(value: typing.Any, with_date: bool = False) -> str:
	moment = _moment(value)
	if moment is None:
		return "?" if value is None else _cut(value, 24)
	if not with_date:
		return moment.strftime("%H:%M:%S")
	return "{} {} ({})".format(moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], _zone(moment), _offset(moment))


def _zone(moment: datetime.datetime | None = None) -> str:
	moment = moment or datetime.datetime.now().astimezone()
	return moment.tzname() or _offset(moment)


def _offset(moment: datetime.datetime) -> str:
	text = moment.strftime("%z")
	return "{}:{}".format(text[:3], text[3:5]) if len(text) >= 5 else text


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, now: float | None = None) -> float:
	"""
	A point in time for ``--since`` / ``--until`` and the web UI's filter, as unix seconds.

	Accepts a span back from now (``90s``, ``15m``, ``2h``, ``1d``, ``1w``), an ISO 8601 date or date and time
	(``2024-05-01``, ``2024-05-01T12:30``, ``2024-05-01 12:30:00+02:00``; without a zone: local time) or unix
	seconds (``1714557000``).

	Raises:
		ValueError: with a message saying what is accepted.
	"""
	import time

	text = str(value).strip()
	match = _DURATION.match(text)
	if match:
		now = time.time() if now is None else now
		return now - float(match.group(1)) * _UNITS[match.group(2).lower()]
	number = _number(text)
	if number is not None:
		return number
	try:
		moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
	except ValueError:
		raise ValueError(
			"{!r} is not a time: use a span back from now like 15m, 2h, 1d, an ISO date like 2024-05-01"
			" or 2024-05-01T12:30 (local time unless a zone is given), or unix seconds".format(text[:40])
		)
	if moment.tzinfo is None:
		moment = moment.astimezone()  # naive: local time
	return moment.timestamp()


# Text shaping


def _cells(text: str) -> int:
	return _cell_len(text)


try:
	from rich.cells import cell_len as _cell_len
	from rich.cells import set_cell_size as _set_cell_size
except ImportError:  # pragma: no cover - rich comes with the [collector] extra

	def _cell_len(text: str) -> int:
		return len(text)

	def _set_cell_size(text: str, total: int) -> str:
		return text[:total].ljust(total)


def _cut(text: typing.Any, width: int) -> str:
	"""One line of at most ``width`` terminal cells, cleaned, with an ellipsis where it was cut."""
	text = clean(text).replace("\n", " ")
	if _cells(text) <= width:
		return text
	if width <= 0:
		return ""
	return _set_cell_size(text, width - 1).rstrip() + "…"


def _pad(text: str, width: int) -> str:
	text = _cut(text, width)
	return text + " " * max(width - _cells(text), 0)


def _wrap(text: typing.Any, width: int = WIDTH) -> list[str]:
	"""Long text folded to ``width``, line breaks kept, cleaned."""
	lines = []
	for paragraph in clean(text).split("\n") or [""]:
		lines.extend(_cut(line, width) for line in textwrap.wrap(paragraph, width=width, subsequent_indent="  "))
		if not paragraph:
			lines.append("")
	return lines or [""]


# Lines with a style: what the formatters produce, printed plain or in colour by `Printer`.


class Line(str):
	"""A line of output (already clean and fitting the width) with an optional rich style name."""

	Style: str | None = None
	Spans: tuple[tuple[int, int, str], ...] = ()

	def __new__(cls, text: str, style: str | None = None, spans: tuple[tuple[int, int, str], ...] = ()) -> Line:
		line = super().__new__(cls, text)
		line.Style = style
		line.Spans = spans
		return line


_LEVEL_STYLES = {
	"fatal": "bold white on red",
	"error": "bold red",
	"warning": "yellow",
	"warn": "yellow",
	"trace": "dim",
	"info": "blue",
	"debug": "dim",
}

_TYPE_LABELS = {
	"event": "error",
	"transaction": "txn",
	"check_in": "check",
	"client_report": "c-rep",
	"attachment": "file",
	"session": "sess",
	"sessions": "sess",
	"user_report": "fback",
	"feedback": "fback",
	"profile": "prof",
	"span": "spans",
	"otel_log": "log",
}


def format_list_line(item: dict[str, typing.Any], width: int = WIDTH, dated: bool = False) -> Line:
	"""
	One line: id, local time (``dated``: with the month and day, ``MM-DD HH:MM``), type, level, title,
	release version/environment.
	"""
	item = _dict(item)
	kind = _TYPE_LABELS.get(str(item.get("type")), str(item.get("type")))
	if item.get("type") == "event" and not item.get("exception_type"):
		kind = "msg"
	release = clean(item.get("release") or "-")
	where = "{}/{}".format(release.split("@", 1)[-1], clean(item.get("environment") or "-"))
	level = str(item.get("level") or "")
	received = _moment(item.get("received"))
	if dated:
		when = "?" if received is None else received.strftime("%m-%d %H:%M")
	else:
		when = _time(item.get("received"))
	head = "{:>5} {} {} ".format(clean(item.get("id", "?")), _pad(when, 11 if dated else 8), _pad(kind, 5))
	level_at = _cells(head)
	head += _pad(level, 7) + " "
	where = _cut(where, max(min(30, width // 4), 8))
	title_width = max(width - _cells(head) - _cells(where) - 1, 10)
	text = "{}{} {}".format(head, _pad(item.get("title") or "", title_width), where)
	return Line(text, spans=((level_at, level_at + 7, _LEVEL_STYLES.get(level, "")),))


def list_header(width: int = WIDTH, dated: bool = False) -> Line:
	text = "{:>5} {:<{tw}} {:<5} {:<7} {}".format(
		"ID", "TIME", "TYPE", "LEVEL", "TITLE  (release version/environment)", tw=11 if dated else 8
	)
	zone = "times: {}".format(_zone())
	if _cells(text) + 2 + len(zone) <= width:
		text = text + " " * (width - _cells(text) - len(zone)) + zone
	return Line(_cut(text, width), "bold")


def format_list(items: list[dict[str, typing.Any]], width: int = WIDTH) -> list[Line]:
	"""The header and one line per item; times carry their date when not all items are from today."""
	today = datetime.datetime.now().astimezone().date()
	dated = any((_moment(_dict(i).get("received")) or datetime.datetime.max).date() != today for i in items)
	return [list_header(width, dated)] + [format_list_line(i, width, dated) for i in items]


def format_item(item: dict[str, typing.Any], width: int = WIDTH) -> list[Line]:
	"""
	The whole story of one item, for ``events show``: every line at most ``width`` cells. What cannot be read
	as an event is shown as JSON; the view never raises on stored content.
	"""
	try:
		item = _dict(item)
		event = item.get("payload")
		if item.get("type") == "transaction" and isinstance(event, dict):
			return _format_transaction(item, event, width)
		if item.get("type") in ("event", "feedback") and isinstance(event, dict):
			return _format_event(item, event, width)
		special = _FORMATS.get(str(item.get("type")))
		if special is not None and (isinstance(event, dict) or item.get("type") == "attachment"):
			return special(item, event, width)
		return _format_other(item, width)
	except Exception as e:  # the last resort: say so once and show the raw payload
		lines = [
			Line(_cut("(this item could not be shown in full: {}: {})".format(type(e).__name__, e), width), "yellow")
		]
		try:
			lines.extend(_format_other(item, width))
		except Exception:
			pass
		return lines


def _format_other(item: dict, width: int) -> list[Line]:
	lines = [Line(_cut("{} #{}".format(item.get("type"), item.get("id")), width), "bold")]
	event = item.get("payload")
	text = json.dumps(event, indent=2, default=str, ensure_ascii=False) if not isinstance(event, str) else event
	for line in clean(text[:20000]).split("\n"):
		lines.append(Line(_cut(line, width)))
	return lines


def _title(item: dict, width: int) -> list[Line]:
	return [
		Line("=" * width, "dim"),
		Line(_cut("{} #{}: {}".format(item.get("type"), item.get("id"), item.get("title") or ""), width), "bold"),
		Line("=" * width, "dim"),
	]


def _fields(pairs: typing.Iterable[tuple[str, typing.Any]], width: int) -> list[Line]:
	return [Line(_cut("{:<14}{}".format(name + ":", "-" if value is None else value), width)) for name, value in pairs]


def _format_check_in(item: dict, check_in: dict, width: int) -> list[Line]:
	duration = _number(check_in.get("duration"))
	lines = _title(item, width) + _fields(
		(
			("monitor", clean(check_in.get("monitor_slug") or "?")),
			("status", clean(check_in.get("status") or "?")),
			("duration", None if duration is None else "{:.3f}s".format(duration)),
			("check_in_id", clean(check_in.get("check_in_id") or "-")),
			("time", _time(item.get("received"), with_date=True)),
			("release", clean(check_in.get("release") or item.get("release") or "-")),
			("environment", clean(check_in.get("environment") or item.get("environment") or "-")),
		),
		width,
	)
	config = _dict(check_in.get("monitor_config"))
	if config:
		lines.extend(_section("Monitor", width))
		lines.extend(Line(_cut("  {:<20} {}".format(clean(k), _json(v)), width)) for k, v in config.items())
	return lines


def _format_logs(item: dict, batch: dict, width: int) -> list[Line]:
	records = [r for r in _list(batch.get("items")) if isinstance(r, dict)]
	if item.get("type") == "otel_log":  # sentry-sdk before 2.28: OpenTelemetry's shape, read as the store does
		records = [store_module._from_otel_log(r) for r in store_module._records(batch)]
	lines = _title(item, width)
	lines.extend(_section("Log records ({})".format(len(records)), width))
	for record in records:
		level = clean(record.get("level") or "")
		head = "  {} {} ".format(_time(record.get("timestamp")), _pad(level, 7))
		lines.append(
			Line(
				_cut(head + clean(record.get("body") or ""), width),
				spans=((11, 18, _LEVEL_STYLES.get(level, "")),),
			)
		)
		for key, value in sorted(_dict(record.get("attributes")).items()):
			if str(key).startswith(("sentry.", "process.", "os.", "server.address")):
				continue  # what every record of the SDK carries (sdk, template, runtime, host): in --json
			value = value.get("value") if isinstance(value, dict) and "value" in value else value
			lines.append(Line(_cut("             {} = {}".format(clean(key), _json(value)), width), "dim"))
	return lines


def _format_spans(item: dict, batch: dict, width: int) -> list[Line]:
	"""A batch of v2 spans (span streaming) as a waterfall: the segment (or the earliest span) is the root."""
	spans = [s for s in _list(batch.get("items")) or [batch] if isinstance(s, dict)]
	lines = _title(item, width)
	if not spans:
		return lines + [Line("  (no spans)", "dim")]
	root = next((s for s in spans if s.get("is_segment")), None) or min(
		spans, key=lambda s: _seconds(s.get("start_timestamp")) or float("inf")
	)

	def v1(span: dict) -> dict:
		attributes = _dict(span.get("attributes"))
		op = attributes.get("sentry.op")
		op = op.get("value") if isinstance(op, dict) else op
		return {
			"span_id": span.get("span_id"),
			"parent_span_id": span.get("parent_span_id"),
			"op": op or "",
			"description": span.get("name") or "",
			"start_timestamp": span.get("start_timestamp"),
			"timestamp": span.get("end_timestamp"),
			"status": span.get("status") or "",
		}

	lines.append(Line(_cut("trace_id:    {}".format(clean(root.get("trace_id") or "-")), width)))
	lines.extend(_section("Spans", width))
	txn = {
		"transaction": root.get("name") or "span",
		"start_timestamp": root.get("start_timestamp"),
		"timestamp": root.get("end_timestamp"),
		"contexts": {"trace": {"span_id": root.get("span_id"), "status": root.get("status")}},
		"spans": [v1(s) for s in spans if s is not root],
	}
	return lines + waterfall(txn, width)


def _format_attachment(item: dict, data: typing.Any, width: int) -> list[Line]:
	size = item.get("size")
	lines = _title(item, width) + _fields(
		(
			("filename", clean(item.get("filename") or item.get("title") or "-")),
			("content type", clean(item.get("content_type") or "-")),
			("size", None if size is None else "{} bytes".format(size)),
			("of event", clean(item.get("parent_event_id") or "-")),
		),
		width,
	)
	lines.append(Line(""))
	if isinstance(data, str) and data:
		lines.append(Line("-- text (first 40 lines; the exact bytes: the web UI, or the API below)", "bold cyan"))
		lines.extend(Line(_cut(text, width)) for text in clean(data).split("\n")[:40])
	else:
		lines.append(Line("binary: the exact bytes are at the web UI's event page, or from the API:", "dim"))
	lines.append(Line(_cut("  GET /api/0/items/{}/attachment".format(item.get("id")), width)))
	return lines


_FORMATS: dict[str, typing.Callable[[dict, typing.Any, int], list[Line]]] = {
	"check_in": _format_check_in,
	"log": _format_logs,
	"otel_log": _format_logs,
	"span": _format_spans,
	"attachment": _format_attachment,
}


def _header(item: dict, event: dict, width: int) -> list[Line]:
	level = str(item.get("level") or "")
	lines = [
		Line("=" * width, "dim"),
		Line(_cut("{} [{}]".format(item.get("title") or "", level), width), _LEVEL_STYLES.get(level, "bold") + " bold"),
		Line("=" * width, "dim"),
		Line(_cut("id:          {}   event_id: {}".format(item.get("id"), event.get("event_id")), width)),
		*[Line(_cut(text, width)) for text in _event_time(item, event)],
		Line(_cut("release:     {}".format(event.get("release") or "-"), width)),
		Line(_cut("environment: {}".format(event.get("environment") or "-"), width)),
		# Relay's normalizer moves server_name into the tags, as Sentry does
		Line(
			_cut(
				"server_name: {}".format(event.get("server_name") or payload.tags(event).get("server_name") or "-"),
				width,
			)
		),
	]
	if event.get("logger"):
		lines.append(Line(_cut("logger:      {}".format(event["logger"]), width)))
	return lines


def _event_time(item: dict, event: dict) -> list[str]:
	stamp = event.get("timestamp")
	if stamp is None or _moment(stamp) is not None:
		return ["time:        " + _time(stamp if stamp is not None else item.get("received"), with_date=True)]
	return [
		"time:        {} (received)".format(_time(item.get("received"), with_date=True)),
		"             event timestamp {} unreadable".format(_json(stamp)),
	]


def _section(title: str, width: int) -> list[Line]:
	return [Line(""), Line(_cut("-- {} {}".format(title, "-" * max(width - len(title) - 4, 0)), width), "bold cyan")]


def _format_event(item: dict, event: dict, width: int) -> list[Line]:
	lines = _header(item, event, width)
	values = payload.exceptions(event)
	if values:
		lines.extend(_section("Exception (most recent call last)", width))
		for index, exc in enumerate(values):
			if index:
				lines.append(Line(""))
				lines.append(Line("The above exception was followed by:", "dim"))
			mechanism = _dict(exc.get("mechanism"))
			handled = mechanism.get("handled")
			summary = "{}{}   [{}{}]".format(
				clean(exc.get("type") or "Error"),
				"" if exc.get("value") is None else ": {}".format(clean(exc.get("value"))),
				mechanism.get("type", "?"),
				"" if handled is None else (", handled" if handled else ", UNHANDLED"),
			)
			lines.extend(Line(text, "bold red") for text in _wrap(summary, width))
			for frame in _list(_dict(exc.get("stacktrace")).get("frames")):
				lines.extend(_format_frame(frame, width))
	message = payload.message(event)
	if message:
		lines.extend(_section("Message", width))
		lines.extend(Line(text) for text in _wrap(message, width))
	lines.extend(_tag_lines(event, width))
	extra = event.get("extra")
	if extra:
		lines.extend(_section("Extra", width))
		pairs = extra.items() if isinstance(extra, dict) else enumerate(_list(extra))
		for key, value in pairs:
			lines.append(Line(_cut("  {:<20} {}".format(clean(key), _json(value)), width)))
	crumbs = _list(event.get("breadcrumbs"))
	if crumbs:
		lines.extend(_section("Breadcrumbs ({})".format(len(crumbs)), width))
		for crumb in crumbs:
			crumb = _dict(crumb)
			data = crumb.get("data")
			text = "  {} {} {} {}{}".format(
				_time(crumb.get("timestamp")),
				_pad(crumb.get("level") or "", 7),
				_pad(crumb.get("category") or crumb.get("type") or "", 16),
				clean(crumb.get("message") or ""),
				" " + _json(data) if data else "",
			)
			lines.append(Line(_cut(text, width)))
	contexts = event.get("contexts")
	if contexts:
		lines.extend(_section("Contexts", width))
		pairs = contexts.items() if isinstance(contexts, dict) else enumerate(_list(contexts))
		for name, value in pairs:
			lines.append(Line(_cut("  {:<12} {}".format(clean(name), _json(value)), width)))
	return lines


def _format_frame(frame: typing.Any, width: int) -> list[Line]:
	if not isinstance(frame, dict):
		return [Line(_cut("  {}".format(_json(frame)), width), "dim")]
	in_app = frame.get("in_app", True) is not False
	lineno = _number(frame.get("lineno"))
	lineno = int(lineno) if lineno is not None and abs(lineno) < 1e12 else None
	where = ", line {}, in {}{}".format(
		"?" if lineno is None else lineno, clean(frame.get("function") or "?"), "" if in_app else "  (library)"
	)
	path = clean(frame.get("abs_path") or frame.get("filename") or frame.get("module") or "?")
	room = width - _cells(where) - len('  File ""')
	if _cells(path) > room:  # keep the end of the path, which says the most
		path = "…" + path[-max(room - 1, 10) :]
	lines = [Line(_cut('  File "{}"{}'.format(path, where), width), None if in_app else "dim")]
	pre = [p for p in _list(frame.get("pre_context"))]
	post = [p for p in _list(frame.get("post_context"))]

	def number(value: int | None) -> str:
		return "" if value is None else str(value)

	for offset, text in enumerate(pre):
		at = None if lineno is None else lineno - len(pre) + offset
		lines.append(Line(_cut("     {:>5}  {}".format(number(at), clean(text).rstrip()), width), "dim"))
	if frame.get("context_line") is not None:
		lines.append(
			Line(_cut("  >> {:>5}  {}".format(number(lineno), clean(frame["context_line"]).rstrip()), width), "bold")
		)
	for offset, text in enumerate(post):
		at = None if lineno is None else lineno + 1 + offset
		lines.append(Line(_cut("     {:>5}  {}".format(number(at), clean(text).rstrip()), width), "dim"))
	for name, value in _dict(frame.get("vars")).items():
		shown = value if isinstance(value, str) else _json(value)
		lines.append(Line(_cut("       {} = {}".format(clean(name), shown), width), "green"))
	return lines


def _format_transaction(item: dict, txn: dict, width: int) -> list[Line]:
	lines = _header(item, txn, width)
	trace = _dict(_dict(txn.get("contexts")).get("trace"))
	lines.append(
		Line(_cut("trace_id:    {}   status: {}".format(trace.get("trace_id"), trace.get("status", "-")), width))
	)
	lines.extend(_section("Spans", width))
	lines.extend(waterfall(txn, width))
	lines.extend(_tag_lines(txn, width))
	return lines


def _tag_lines(event: dict, width: int) -> list[Line]:
	tags = payload.tags(event)
	if not tags:
		return []
	return _section("Tags", width) + [
		Line(_cut("  {:<20} {}".format(clean(k), v), width)) for k, v in sorted(tags.items())
	]


def _seconds(value: typing.Any) -> float | None:
	moment = _moment(value)
	return None if moment is None else moment.timestamp()


def waterfall(txn: dict, width: int = WIDTH) -> list[Line]:
	"""
	The transaction and its spans as a terminal waterfall: each bar starts at the span's offset and its
	length is proportional to its duration.
	"""
	start = _seconds(txn.get("start_timestamp"))
	end = _seconds(txn.get("timestamp"))
	if start is None or end is None or end < start:
		return [Line("  (no timing information)", "dim")]
	trace = _dict(_dict(txn.get("contexts")).get("trace"))
	root_id = trace.get("span_id")
	spans = [s for s in _list(txn.get("spans")) if isinstance(s, dict)]
	children: dict[typing.Any, list[dict]] = {}
	for span in spans:
		children.setdefault(_key(span.get("parent_span_id")), []).append(span)
	for siblings in children.values():
		siblings.sort(key=lambda s: _seconds(s.get("start_timestamp")) or 0.0)

	rows: list[tuple[str, float, float, str]] = [
		(clean(txn.get("transaction") or "transaction"), start, end, str(trace.get("status") or ""))
	]
	seen: set = set()

	def walk(parent: typing.Any, depth: int) -> None:
		for span in children.get(parent, []):
			if id(span) in seen:
				continue
			seen.add(id(span))
			s = _seconds(span.get("start_timestamp")) or start
			e = _seconds(span.get("timestamp")) or s
			label = "{}{} {}".format(
				"  " * min(depth, 10), clean(span.get("op") or ""), clean(span.get("description") or "")
			)
			rows.append((label, s, e, str(span.get("status") or "")))
			walk(_key(span.get("span_id")), depth + 1)

	walk(_key(root_id), 1)
	for span in spans:  # spans whose parent is missing, or in a cycle: show them anyway
		if id(span) not in seen:
			children.setdefault("(orphans)", []).append(span)
	walk("(orphans)", 1)

	label_width, duration_width = 26, 10
	bar_width = max(width - label_width - duration_width - 2, 10)
	total = max(end - start, 1e-9)
	lines = []
	for label, s, e, status in rows:
		offset = int(round(min(max((s - start) / total, 0.0), 1.0) * bar_width))
		length = max(1, int(round(min(max((e - s) / total, 0.0), 1.0) * bar_width)))
		offset = min(offset, bar_width - 1)
		length = min(length, bar_width - offset)
		ok = status in ("", "ok")
		bar = " " * offset + ("█" if ok else "▓") * length
		text = "{} {:<{bw}} {:>{dw}}".format(
			_pad(label, label_width),
			bar,
			_cut("{:.1f}ms".format((e - s) * 1000), duration_width - 1),
			bw=bar_width,
			dw=duration_width - 1,
		)
		at = label_width + 1 + offset
		lines.append(Line(text, spans=((at, at + length, "green" if ok else "red"),)))
	return lines


def _key(value: typing.Any) -> typing.Any:
	return value if isinstance(value, (str, int, type(None))) else _json(value)


class Printer:
	"""
	Prints `Line` objects to a stream: in colour when it is a terminal (``rich`` decides, honouring ``NO_COLOR``
	and ``FORCE_COLOR``), plain otherwise. Every line is cleaned once more on the way out.
	"""

	def __init__(self, stream: typing.TextIO | None = None):
		self.Stream = stream or sys.stdout
		self._console = None
		try:
			import rich.console

			console = rich.console.Console(file=self.Stream, highlight=False, markup=False, emoji=False)
			if console.is_terminal or console.color_system is not None:
				self._console = console
		except ImportError:  # pragma: no cover - rich comes with the [collector] extra
			pass

	def print(self, lines: typing.Iterable[str]) -> None:
		for line in lines:
			text = clean(line).replace("\n", " ")
			if self._console is None or not isinstance(line, Line):
				self._write(text)
				continue
			import rich.text

			styled = rich.text.Text(text, style=line.Style or "", no_wrap=True, overflow="ignore")
			for start, end, style in line.Spans:
				if style:
					styled.stylize(style, start, end)
			self._console.print(styled, crop=False, soft_wrap=True)

	def _write(self, text: str) -> None:
		try:
			self.Stream.write(text + "\n")
		except UnicodeEncodeError:  # a terminal that cannot show some characters (LANG=C): show escapes
			encoding = getattr(self.Stream, "encoding", None) or "ascii"
			self.Stream.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")
		self.Stream.flush()
