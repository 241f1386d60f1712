"""
``asab-sentry events issues``: the issues the collector grouped, one line each (or JSON), read from the
storage file or a running collector's ``GET /api/0/issues``.
"""

from __future__ import annotations

import datetime
import typing
import urllib.parse

from . import viewer

WIDTH = 80


def clean(text: typing.Any) -> str:
	"""``text`` as a single line without terminal control sequences (`viewer.clean`)."""
	return viewer.clean("" if text is None else text).replace("\n", " ")


def _cut(text: str, width: int) -> str:
	return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _ago(timestamp: typing.Any, now: float) -> str:
	if not isinstance(timestamp, (int, float)):
		return "?"
	seconds = max(now - float(timestamp), 0)
	for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
		if seconds >= size:
			return "{}{} ago".format(int(seconds // size), unit)
	return "{}s ago".format(int(seconds))


def header(width: int = WIDTH) -> str:
	return _cut(
		"{:>5} {:<7} {:>6} {:>9}  {}".format("ISSUE", "LEVEL", "EVENTS", "LAST SEEN", "TITLE  (culprit)"), width
	)


def format_issue(issue: dict[str, typing.Any], width: int = WIDTH, now: float | None = None) -> str:
	"""One line: id, level, event count, last seen (relative), title and culprit, releases/environments."""
	now = datetime.datetime.now().timestamp() if now is None else now
	head = "{:>5} {:<7} {:>6} {:>9}  ".format(
		issue.get("id"), _cut(clean(issue.get("level") or ""), 7), issue.get("count"), _ago(issue.get("last_seen"), now)
	)
	where = ",".join(clean(e) for e in issue.get("environments") or [])
	title = clean(issue.get("title") or "")
	if issue.get("culprit"):
		title += "  ({})".format(clean(issue["culprit"]))
	room = max(width - len(head) - (len(where) + 1 if where else 0), 10)
	line = head + "{:<{w}}".format(_cut(title, room), w=room)
	if where:
		line += " " + _cut(where, max(width - len(line) - 1, 0))
	return line.rstrip()


def format_issues(issues: list[dict[str, typing.Any]], width: int = WIDTH) -> list[str]:
	"""The issue table: a header and one line per issue."""
	now = datetime.datetime.now().timestamp()
	return [header(width)] + [format_issue(i, width, now) for i in issues]


def read_issues(source: typing.Any, **filters: typing.Any) -> list[dict[str, typing.Any]]:
	"""
	Issues from a viewer ``Source``: its storage file (`Store.issues`) or its collector's API.
	Filters: those of `Store.issues`.
	"""
	if getattr(source, "Store", None) is not None:
		return source.Store.issues(**filters)
	query: dict[str, typing.Any] = {}
	for key, value in filters.items():
		if value is None:
			continue
		if key == "tag":
			query["tag"] = "{}:{}".format(*value)
		elif key == "text":
			query["q"] = value
		else:
			query[key] = value
	return source._get("/api/0/issues?" + urllib.parse.urlencode(query))["issues"]
