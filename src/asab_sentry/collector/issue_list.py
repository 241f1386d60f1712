"""
``asab-sentry events issues``: the issues the collector grouped, one line each (or JSON), read from the
storage file or a running collector's ``GET /api/0/issues``. Lines are made like the viewer's (`viewer`):
cleaned of terminal control sequences, fitted to the terminal's width, coloured by level on a terminal.
"""

from __future__ import annotations

import time
import typing

from .viewer import _LEVEL_STYLES, WIDTH, Line, _cells, _cut, _pad, clean


def _ago(timestamp: typing.Any, now: float) -> str:
	if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
		return "?"
	seconds = max(now - float(timestamp), 0)
	for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
		if seconds >= size:
			return "{}{} ago".format(int(seconds // size), unit)
	return "{}s ago".format(int(seconds))


def header(width: int = WIDTH) -> Line:
	return Line(
		_cut("{:>5} {:<7} {:>6} {:>9}  {}".format("ISSUE", "LEVEL", "EVENTS", "LAST SEEN", "TITLE  (culprit)"), width),
		"bold",
	)


def format_issue(issue: dict[str, typing.Any], width: int = WIDTH, now: float | None = None) -> Line:
	"""One line: id, level, event count, last seen (relative), title and culprit, environments."""
	now = time.time() if now is None else now
	level = clean(issue.get("level") or "")
	head = "{:>5} {} {:>6} {:>9}  ".format(
		_cut(issue.get("id"), 5), _pad(level, 7), _cut(issue.get("count"), 6), _ago(issue.get("last_seen"), now)
	)
	environments = issue.get("environments")
	where = ",".join(clean(e) for e in environments) if isinstance(environments, list) else ""
	title = clean(issue.get("title") or "")
	if issue.get("culprit"):
		title += "  ({})".format(clean(issue["culprit"]))
	where = _cut(where, max(min(20, width - _cells(head) - 11), 0)) if where else ""
	room = max(width - _cells(head) - (_cells(where) + 1 if where else 0), 10)
	line = head + (_pad(title, room) + " " + where if where else _cut(title, room))
	start = head.index(level) if level else 0
	return Line(line.rstrip(), spans=((start, start + len(level), _LEVEL_STYLES.get(level, "")),))


def format_issues(issues: list[dict[str, typing.Any]], width: int = WIDTH) -> list[Line]:
	"""The issue table: a header and one line per issue."""
	now = time.time()
	return [header(width)] + [format_issue(i, width, now) for i in issues]


def read_issues(source: typing.Any, **filters: typing.Any) -> list[dict[str, typing.Any]]:
	"""
	Issues from a viewer ``Source``: its storage file (`Store.issues`) or its collector's API.
	Filters: those of `Store.issues`.
	"""
	return source.issues(**filters)
