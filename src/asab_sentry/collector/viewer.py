"""
``asab-sentry events``: read what the collector stored, in a terminal (80 columns) or as JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import textwrap
import typing
import urllib.parse
import urllib.request

from .. import payload
from .store import Store

WIDTH = 80


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
		if self.Store is not None:
			return self.Store.list(**filters)
		query = {}
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
		return self._get("/api/0/items?" + urllib.parse.urlencode(query))["items"]

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


def _time(timestamp: float | str | None, with_date: bool = False) -> str:
	if timestamp is None:
		return "?"
	if isinstance(timestamp, str):
		try:
			moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
		except ValueError:
			return timestamp
	else:
		moment = datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc)
	return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if with_date else moment.strftime("%H:%M:%S")


def _wrap(text: str, width: int = WIDTH) -> list[str]:
	"""Long text folded to the terminal's width, line breaks kept."""
	lines = []
	for paragraph in text.splitlines() or [""]:
		lines.extend(textwrap.wrap(paragraph, width=width, subsequent_indent="  ") or [""])
	return lines


def _cut(text: str, width: int) -> str:
	text = str(text).replace("\r", " ").replace("\n", " ").replace("\t", "  ")
	return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


_TYPE_LABELS = {"event": "error", "transaction": "txn"}


def format_list_line(item: dict[str, typing.Any]) -> str:
	"""One 80-column line: id, time, type, level, title, release version/environment."""
	kind = _TYPE_LABELS.get(item["type"], item["type"])
	if item["type"] == "event" and not item.get("exception_type"):
		kind = "msg"
	release = str(item.get("release") or "-")
	where = "{}/{}".format(release.split("@", 1)[-1], item.get("environment") or "-")
	head = "{:>5} {} {:<5} {:<7} ".format(
		item["id"], _time(item["received"]), _cut(kind, 5), _cut(item.get("level") or "", 7)
	)
	where = _cut(where, 20)
	title_width = WIDTH - len(head) - len(where) - 1
	return "{}{:<{w}} {}".format(head, _cut(item.get("title") or "", title_width), where, w=title_width)


def format_list(items: list[dict[str, typing.Any]]) -> str:
	header = "{:>5} {:<8} {:<5} {:<7} {}".format("ID", "TIME", "TYPE", "LEVEL", "TITLE  (release version/environment)")
	return "\n".join([header] + [format_list_line(i) for i in items])


def format_item(item: dict[str, typing.Any]) -> str:
	"""The whole story of one item, for ``events show``."""
	payload = item.get("payload")
	if item["type"] == "transaction" and isinstance(payload, dict):
		return _format_transaction(item, payload)
	if item["type"] == "event" and isinstance(payload, dict):
		return _format_event(item, payload)
	return "{} #{}\n{}".format(item["type"], item["id"], json.dumps(payload, indent=2)[:20000])


def _header(item: dict, payload: dict) -> list[str]:
	lines = [
		"=" * WIDTH,
		_cut("{} [{}]".format(item.get("title") or "", item.get("level") or ""), WIDTH),
		"=" * WIDTH,
		"id:          {}   event_id: {}".format(item["id"], payload.get("event_id")),
		"time:        {}".format(_time(payload.get("timestamp") or item["received"], with_date=True)),
		"release:     {}".format(payload.get("release") or "-"),
		"environment: {}".format(payload.get("environment") or "-"),
		"server_name: {}".format(payload.get("server_name") or "-"),
	]
	if payload.get("logger"):
		lines.append("logger:      {}".format(payload["logger"]))
	return lines


def _section(title: str) -> str:
	return "\n-- {} {}".format(title, "-" * max(WIDTH - len(title) - 4, 0))


def _format_event(item: dict, event: dict) -> str:
	lines = _header(item, event)
	values = payload.exceptions(event)
	if values:
		lines.append(_section("Exception (most recent call last)"))
		for index, exc in enumerate(values):
			if index:
				lines.append("")
				lines.append("The above exception was followed by:")
			mechanism = exc.get("mechanism") or {}
			handled = mechanism.get("handled")
			lines.extend(
				_wrap(
					"{}: {}   [{}{}]".format(
						exc.get("type"),
						exc.get("value"),
						mechanism.get("type", "?"),
						"" if handled is None else (", handled" if handled else ", UNHANDLED"),
					)
				)
			)
			for frame in (exc.get("stacktrace") or {}).get("frames") or []:
				lines.extend(_format_frame(frame))
	message = payload.message(event)
	if message:
		lines.append(_section("Message"))
		lines.extend(_wrap(message))
	lines.extend(_tag_lines(event))
	if event.get("extra"):
		lines.append(_section("Extra"))
		for key, value in event["extra"].items():
			lines.append(_cut("  {:<20} {}".format(key, json.dumps(value, default=str)), WIDTH))
	crumbs = (event.get("breadcrumbs") or {}).get("values") or []
	if crumbs:
		lines.append(_section("Breadcrumbs ({})".format(len(crumbs))))
		for crumb in crumbs:
			data = crumb.get("data")
			text = "  {} {:<7} {:<16} {}{}".format(
				_time(crumb.get("timestamp")),
				crumb.get("level", ""),
				_cut(crumb.get("category") or crumb.get("type") or "", 16),
				crumb.get("message") or "",
				" " + json.dumps(data, default=str) if data else "",
			)
			lines.append(_cut(text, WIDTH))
	contexts = event.get("contexts") or {}
	if contexts:
		lines.append(_section("Contexts"))
		for name, value in contexts.items():
			lines.append(_cut("  {:<12} {}".format(name, json.dumps(value, default=str, sort_keys=True)), WIDTH))
	return "\n".join(lines)


def _format_frame(frame: dict) -> list[str]:
	where = ", line {}, in {}{}".format(
		frame.get("lineno"), frame.get("function"), "" if frame.get("in_app", True) else "  (library)"
	)
	path = str(frame.get("abs_path") or frame.get("filename"))
	room = WIDTH - len(where) - len('  File ""')
	if len(path) > room:  # keep the end of the path, which says the most
		path = "…" + path[-max(room - 1, 10) :]
	lines = [_cut('  File "{}"{}'.format(path, where), WIDTH)]
	lineno = frame.get("lineno") or 0
	pre = frame.get("pre_context") or []
	for offset, text in enumerate(pre):
		lines.append(_cut("     {:>5}  {}".format(lineno - len(pre) + offset, text.rstrip()), WIDTH))
	if frame.get("context_line") is not None:
		lines.append(_cut("  >> {:>5}  {}".format(lineno, frame["context_line"].rstrip()), WIDTH))
	for offset, text in enumerate(frame.get("post_context") or []):
		lines.append(_cut("     {:>5}  {}".format(lineno + 1 + offset, text.rstrip()), WIDTH))
	for name, value in (frame.get("vars") or {}).items():
		lines.append(_cut("       {} = {}".format(name, value if isinstance(value, str) else json.dumps(value)), WIDTH))
	return lines


def _seconds(value: typing.Any) -> float | None:
	if isinstance(value, (int, float)):
		return float(value)
	if isinstance(value, str):
		try:
			return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
		except ValueError:
			return None
	return None


def _format_transaction(item: dict, txn: dict) -> str:
	lines = _header(item, txn)
	trace = (txn.get("contexts") or {}).get("trace") or {}
	lines.append("trace_id:    {}   status: {}".format(trace.get("trace_id"), trace.get("status", "-")))
	lines.append(_section("Spans"))
	lines.extend(waterfall(txn))
	lines.extend(_tag_lines(txn))
	return "\n".join(lines)


def _tag_lines(event: dict) -> list[str]:
	tags = payload.tags(event)
	if not tags:
		return []
	return [_section("Tags")] + [_cut("  {:<20} {}".format(k, v), WIDTH) for k, v in sorted(tags.items())]


def waterfall(txn: dict, width: int = WIDTH) -> list[str]:
	"""
	The transaction and its spans as a terminal waterfall: each bar starts at the span's offset and its
	length is proportional to its duration.
	"""
	start = _seconds(txn.get("start_timestamp"))
	end = _seconds(txn.get("timestamp"))
	if start is None or end is None:
		return ["  (no timing information)"]
	trace = (txn.get("contexts") or {}).get("trace") or {}
	root_id = trace.get("span_id")
	spans = [s for s in txn.get("spans") or [] if isinstance(s, dict)]
	children: dict[typing.Any, list[dict]] = {}
	for span in spans:
		children.setdefault(span.get("parent_span_id"), []).append(span)
	for siblings in children.values():
		siblings.sort(key=lambda s: _seconds(s.get("start_timestamp")) or 0.0)

	rows: list[tuple[str, float, float, str]] = [
		(txn.get("transaction") or "transaction", start, end, trace.get("status") or "")
	]

	def walk(parent: typing.Any, depth: int) -> None:
		for span in children.get(parent, []):
			s = _seconds(span.get("start_timestamp")) or start
			e = _seconds(span.get("timestamp")) or s
			label = "{}{} {}".format("  " * depth, span.get("op") or "", span.get("description") or "")
			rows.append((label, s, e, span.get("status") or ""))
			walk(span.get("span_id"), depth + 1)

	walk(root_id, 1)
	known = {root_id} | {s.get("span_id") for s in spans}
	for span in spans:  # spans whose parent is missing: show them anyway
		if span.get("parent_span_id") not in known:
			children.setdefault("orphans", []).append(span)
	walk("orphans", 1)

	label_width, duration_width = 26, 10
	bar_width = max(width - label_width - duration_width - 2, 10)
	total = max(end - start, 1e-9)
	lines = []
	for label, s, e, status in rows:
		offset = int(round((s - start) / total * bar_width))
		length = max(1, int(round((e - s) / total * bar_width)))
		offset = min(offset, bar_width - 1)
		length = min(length, bar_width - offset)
		bar = " " * offset + ("█" if status in ("", "ok") else "▓") * length
		lines.append(
			"{:<{lw}} {:<{bw}} {:>{dw}}".format(
				_cut(label, label_width),
				bar,
				"{:.1f}ms".format((e - s) * 1000),
				lw=label_width,
				bw=bar_width,
				dw=duration_width - 1,
			)
		)
	return lines
