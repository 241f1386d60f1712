"""
The collector's web UI: server-rendered pages (Jinja2, autoescaped; no JavaScript build step) over the store.

Pages::

	/                      issues with their counts, first/last seen, releases, environments; a filter bar
	/events                every stored item, any type, same filters (``?issue=N``: one issue's events)
	/events/<id>           an event (exceptions, source, locals, breadcrumbs, tags, contexts, attachments)
							or a transaction (its span waterfall)
	/events/<id>/raw       the stored item as JSON (attachments download from the API:
							``/api/0/items/<id>/attachment``, the exact bytes)
	/traces                the most recent traces
	/traces/<trace_id>     every transaction and v2 span of a trace as one waterfall
	/logs                  log records (sentry-sdk ``enable_logs``, ``Sentry.logger``)
	/checkins              cron monitor check-ins
	POST /clear            delete everything stored

A little plain JavaScript (``/static/ui.js``) refreshes list pages when ``GET /stream`` (`live.LiveStream`)
announces a new envelope. Every text taken from an event is HTML-escaped by the template engine; the pages
are sent with a Content-Security-Policy that allows only the collector's own scripts.

Filters (query parameters, also the filter bar's fields): ``environment``, ``release``, ``level``,
``tag`` (``key:value``), ``q`` (text), ``since`` (``15m``, ``2h``, an ISO date; see `viewer.parse_time`),
``type`` and ``issue`` (on ``/events``). Who may open the pages: `guard`.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.resources
import json
import logging
import math
import re
import time
import typing

import aiohttp.web

from .. import payload as payloads
from ..payload import as_dict as _dict
from ..payload import as_list as _list
from .live import LiveStream
from .normalize import clean_text
from .viewer import parse_time

try:
	import jinja2
except ImportError:  # pragma: no cover - jinja2 comes with the [collector] extra
	jinja2 = None  # type: ignore[assignment]

L = logging.getLogger(__name__)

_CSP = (
	"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
	" connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

LEVELS = ("fatal", "error", "warning", "info", "debug")
SORTS = {"last_seen": "last seen", "first_seen": "first seen", "count": "most events"}


# Reading stored values defensively: clients send what the protocol allows, and more.


def _seconds(value: typing.Any) -> float | None:
	"""Unix seconds from a number, a numeric string or an RFC 3339 string; None when it is not a time."""
	if isinstance(value, bool):
		return None
	if isinstance(value, str):
		try:
			value = float(value)
		except ValueError:
			try:
				moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
			except ValueError:
				return None
			if moment.tzinfo is None:
				moment = moment.replace(tzinfo=datetime.timezone.utc)
			return moment.timestamp()
	if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 1e11:
		return float(value)
	return None


def _text(value: typing.Any) -> str:
	if value is None:
		return ""
	if isinstance(value, str):
		return value
	return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def _pretty(value: typing.Any) -> str:
	try:
		return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
	except (TypeError, ValueError):
		return repr(value)


def _local(seconds: float | None) -> str:
	if seconds is None:
		return "?"
	moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).astimezone()
	return "{} {}".format(moment.strftime("%Y-%m-%d %H:%M:%S"), moment.tzname() or "")


def _ago(seconds: float | None, now: float | None = None) -> str:
	if seconds is None:
		return "?"
	delta = max((now or time.time()) - seconds, 0)
	for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
		if delta >= size:
			return "{}{} ago".format(int(delta // size), unit)
	return "{}s ago".format(int(delta))


def _attribute_value(value: typing.Any) -> typing.Any:
	"""Logs and v2 spans send attributes as ``{"type": ..., "value": ...}``."""
	if isinstance(value, dict) and "value" in value:
		return value["value"]
	return value


# Filters


class Filters:
	"""The filter bar's values (query parameters), parsed once; ``Errors`` says what could not be used."""

	def __init__(self, query: typing.Mapping[str, str]):
		self.Values = {
			k: query.get(k, "").strip()
			for k in ("environment", "release", "level", "tag", "q", "since", "type", "issue", "sort")
		}
		if self.Values["sort"] not in SORTS:
			self.Values["sort"] = ""
		self.Errors: list[str] = []
		self.Issue: int | None = None
		if self.Values["issue"]:
			if re.fullmatch(r"[0-9]{1,18}", self.Values["issue"]):
				self.Issue = int(self.Values["issue"])
			else:
				self.Errors.append("issue: {!r} is not an issue number".format(self.Values["issue"][:40]))
		self.Since: float | None = None
		self.Tag: tuple[str, str] | None = None
		if self.Values["since"]:
			try:
				self.Since = parse_time(self.Values["since"])
			except ValueError as e:
				self.Errors.append("since: {}".format(e))
		if self.Values["tag"]:
			key, _, value = self.Values["tag"].partition(":")
			if key and value:
				self.Tag = (key.strip(), value.strip())
			else:
				self.Errors.append("tag: {!r} is not key:value".format(self.Values["tag"][:60]))

	def common(self) -> dict[str, typing.Any]:
		"""The filters every listing of the store takes (`Store.list`, `Store.issues`)."""
		return {
			"environment": self.Values["environment"] or None,
			"release": self.Values["release"] or None,
			"level": self.Values["level"] or None,
			"text": self.Values["q"] or None,
			"tag": self.Tag,
			"since": self.Since,
		}


# View models


def frame_view(frame: typing.Any) -> dict[str, typing.Any]:
	if not isinstance(frame, dict):
		return {"location": _text(frame), "lines": [], "vars": [], "in_app": False}
	lineno = frame.get("lineno")
	try:
		lineno = int(lineno) if lineno is not None and not isinstance(lineno, bool) else None
	except (TypeError, ValueError, OverflowError):
		lineno = None
	pre = [_text(x) for x in _list(frame.get("pre_context"))]
	post = [_text(x) for x in _list(frame.get("post_context"))]
	lines = []
	for offset, text in enumerate(pre):
		lines.append({"number": None if lineno is None else lineno - len(pre) + offset, "text": text, "current": False})
	if frame.get("context_line") is not None:
		lines.append({"number": lineno, "text": _text(frame.get("context_line")), "current": True})
	for offset, text in enumerate(post):
		lines.append({"number": None if lineno is None else lineno + 1 + offset, "text": text, "current": False})
	return {
		"path": _text(frame.get("abs_path") or frame.get("filename") or frame.get("module") or "?"),
		"lineno": lineno,
		"function": _text(frame.get("function") or "?"),
		"module": _text(frame.get("module") or ""),
		"in_app": frame.get("in_app", True) is not False,
		"lines": lines,
		"vars": [(_text(k), _text(v)) for k, v in _dict(frame.get("vars")).items()],
		"location": None,
	}


def exception_views(event: dict) -> list[dict[str, typing.Any]]:
	views = []
	for exc in payloads.exceptions(event):
		mechanism = _dict(exc.get("mechanism"))
		views.append(
			{
				"type": _text(exc.get("type") or "Error"),
				"value": _text(exc.get("value")),
				"module": _text(exc.get("module") or ""),
				"mechanism": _text(mechanism.get("type") or ""),
				"handled": mechanism.get("handled"),
				"frames": [frame_view(f) for f in _list(_dict(exc.get("stacktrace")).get("frames"))],
			}
		)
	return views


def breadcrumb_views(event: dict) -> list[dict[str, typing.Any]]:
	views = []
	for crumb in _list(event.get("breadcrumbs")):
		crumb = _dict(crumb)
		views.append(
			{
				"time": _local(_seconds(crumb.get("timestamp"))),
				"level": _text(crumb.get("level") or ""),
				"category": _text(crumb.get("category") or crumb.get("type") or ""),
				"message": _text(crumb.get("message") or ""),
				"data": _text(crumb.get("data")) if crumb.get("data") else "",
			}
		)
	return views


def _pairs(value: typing.Any) -> list[tuple[str, str]]:
	if isinstance(value, dict):
		return [(_text(k), _text(v)) for k, v in value.items()]
	return [(str(i), _text(v)) for i, v in enumerate(_list(value))]


class Span(typing.NamedTuple):
	span_id: str
	parent_span_id: str
	label: str
	op: str
	start: float
	end: float
	status: str
	item_id: int | None


def spans_of_transaction(item_id: int | None, txn: dict) -> list[Span]:
	start = _seconds(txn.get("start_timestamp"))
	end = _seconds(txn.get("timestamp"))
	if start is None or end is None:
		return []
	trace = _dict(_dict(txn.get("contexts")).get("trace"))
	spans = [
		Span(
			_text(trace.get("span_id")),
			_text(trace.get("parent_span_id") or ""),
			_text(txn.get("transaction") or "transaction"),
			_text(trace.get("op") or ""),
			start,
			end,
			_text(trace.get("status") or ""),
			item_id,
		)
	]
	for span in _list(txn.get("spans")):
		if not isinstance(span, dict):
			continue
		s = _seconds(span.get("start_timestamp"))
		if s is None:
			continue
		e = _seconds(span.get("timestamp"))
		spans.append(
			Span(
				_text(span.get("span_id")),
				_text(span.get("parent_span_id") or ""),
				_text(span.get("description") or span.get("op") or ""),
				_text(span.get("op") or ""),
				s,
				e if e is not None and e >= s else s,
				_text(span.get("status") or ""),
				None,
			)
		)
	return spans


def waterfall_rows(spans: list[Span]) -> dict[str, typing.Any]:
	"""Rows in tree order (children after their parent, siblings by start) with bar offsets in percent."""
	if not spans:
		return {"rows": [], "duration_ms": 0.0}
	start = min(s.start for s in spans)
	end = max(max(s.end for s in spans), start)
	total = max(end - start, 1e-9)
	ids = {s.span_id for s in spans}
	children: dict[str, list[Span]] = {}
	roots = []
	for span in spans:
		if span.parent_span_id and span.parent_span_id in ids and span.parent_span_id != span.span_id:
			children.setdefault(span.parent_span_id, []).append(span)
		else:
			roots.append(span)
	rows: list[dict[str, typing.Any]] = []
	seen: set[int] = set()

	def walk(span: Span, depth: int) -> None:
		if id(span) in seen:
			return
		seen.add(id(span))
		rows.append(
			{
				"label": span.label,
				"op": span.op,
				"depth": min(depth, 20),
				"left": round((span.start - start) / total * 100, 3),
				"width": max(round((span.end - span.start) / total * 100, 3), 0.3),
				"offset_ms": round((span.start - start) * 1000, 1),
				"duration_ms": round((span.end - span.start) * 1000, 1),
				"error": span.status not in ("", "ok"),
				"status": span.status,
				"item_id": span.item_id,
			}
		)
		for child in sorted(children.get(span.span_id, []), key=lambda s: s.start):
			walk(child, depth + 1)

	for root in sorted(roots, key=lambda s: s.start):
		walk(root, 0)
	for span in spans:  # cycles: show what is left
		walk(span, 0)
	return {"rows": rows, "duration_ms": round(total * 1000, 1)}


# The pages


class Page(typing.NamedTuple):
	template: str
	context: dict[str, typing.Any]
	status: int = 200


class WebUI:
	"""
	The pages, mounted next to the collector's API (`install`). Every page is built from the store's read
	API off the event loop (the store may be busy committing a batch).

	Args:
		store: the collector's `Store`.
		live: the `LiveStream` behind ``GET /stream`` (its replay buffer is emptied by Clear).
	"""

	def __init__(self, store: typing.Any, live: LiveStream | None = None):
		if jinja2 is None:
			raise RuntimeError("the collector's web UI needs jinja2: pip install 'asab-sentry[collector]'")
		self.Store = store
		self.Live = live
		self.Templates = jinja2.Environment(
			loader=jinja2.PackageLoader("asab_sentry.collector", "templates"),
			autoescape=True,
			undefined=jinja2.ChainableUndefined,
			trim_blocks=True,
			lstrip_blocks=True,
		)
		self.Templates.filters["local"] = _local
		self.Templates.filters["ago"] = _ago
		self.Templates.globals["LEVELS"] = LEVELS
		self.Templates.globals["SORTS"] = SORTS

	def install(self, app: aiohttp.web.Application) -> None:
		router = app.router
		for path, build in (
			("/", self._issues),
			("/events", self._events),
			("/events/{item_id}", self._event),
			("/traces", self._traces),
			("/traces/{trace_id}", self._trace),
			("/logs", self._logs),
			("/checkins", self._checkins),
		):
			router.add_get(path, self._handler(build))
		router.add_get("/events/{item_id}/raw", self.raw)
		router.add_post("/clear", self.clear)
		router.add_get("/static/{name}", self.static)

	def _handler(self, build: typing.Callable[[aiohttp.web.Request], Page]) -> typing.Any:
		async def handle(request: aiohttp.web.Request) -> aiohttp.web.Response:
			loop = asyncio.get_running_loop()
			status, html = await loop.run_in_executor(None, self._build_and_render, build, request)
			return aiohttp.web.Response(
				# item types kept as sent (span, log, session, ...) may hold lone surrogates: UTF-8 cannot encode them
				text=clean_text(html),
				status=status,
				content_type="text/html",
				charset="utf-8",
				headers={
					"Content-Security-Policy": _CSP,
					"X-Content-Type-Options": "nosniff",
					"Referrer-Policy": "same-origin",
					"Cache-Control": "no-store",
				},
			)

		return handle

	def _build_and_render(self, build: typing.Callable[[aiohttp.web.Request], Page], request: aiohttp.web.Request):
		page = build(request)
		context = dict(page.context)
		context.setdefault("filters", None)
		context.setdefault("page", "")
		context.setdefault(
			"live", page.template in ("issues.html", "events.html", "traces.html", "logs.html", "checkins.html")
		)
		try:
			return page.status, self.Templates.get_template(page.template).render(**context)
		except Exception as e:  # content no page foresaw: say so and show it raw, never a 500
			L.warning("A page could not be rendered", struct_data={"template": page.template, "error": repr(e)[:200]})
			return page.status, self.Templates.get_template("item.html").render(
				page="",
				filters=None,
				problem="{}: {}".format(type(e).__name__, e),
				item=_dict(context.get("item")),
				raw=context.get("raw") or _pretty({k: v for k, v in context.items() if k != "filters"}),
			)

	@staticmethod
	def _missing(what: str) -> Page:
		return Page("missing.html", {"what": what}, 404)

	# Page builders (run in an executor thread)

	def _issues(self, request: aiohttp.web.Request) -> Page:
		filters = Filters(request.query)
		issues = []
		if not filters.Errors:
			issues = self.Store.issues(limit=200, sort=filters.Values["sort"] or "last_seen", **filters.common())
		return Page("issues.html", {"page": "issues", "filters": filters, "issues": issues})

	def _events(self, request: aiohttp.web.Request) -> Page:
		filters = Filters(request.query)
		items = []
		issue = None
		if not filters.Errors:
			items = self.Store.list(
				type=filters.Values["type"] or None, issue_id=filters.Issue, limit=200, **filters.common()
			)
			if filters.Issue is not None:
				issue = self.Store.issue(filters.Issue)
		summary = self.Store.summary()
		return Page(
			"events.html", {"page": "events", "filters": filters, "items": items, "issue": issue, "summary": summary}
		)

	def _item(self, request: aiohttp.web.Request) -> dict | None:
		try:
			item_id = int(request.match_info["item_id"])
		except ValueError:
			return None
		if not 0 <= item_id < 2**63:
			return None
		return self.Store.get(item_id)

	def _event(self, request: aiohttp.web.Request) -> Page:
		item = self._item(request)
		if item is None:
			return self._missing("item {}".format(request.match_info["item_id"][:40]))
		event = item.get("payload")
		context: dict[str, typing.Any] = {"page": "events", "item": item, "raw": _pretty(event)}
		if item.get("type") not in ("event", "transaction", "feedback") or not isinstance(event, dict):
			return Page("item.html", context)
		context.update(
			facts=_facts(event),
			time=_local(_seconds(event.get("timestamp")) or item.get("received")),
			message=payloads.message(event),
			exceptions=exception_views(event),
			breadcrumbs=breadcrumb_views(event),
			tags=sorted(payloads.tags(event).items()),
			contexts=[(_text(k), _pairs(v)) for k, v in _dict(event.get("contexts")).items()],
			extra=_pairs(event.get("extra")),
			request_data=_pairs(event.get("request")),
			user=_pairs(event.get("user")),
			linked=[i for i in item.get("linked") or [] if isinstance(i, dict)],
			siblings=self._siblings(item),
			issue=item.get("issue"),
			trace_id=_text(_dict(_dict(event.get("contexts")).get("trace")).get("trace_id") or ""),
			waterfall=(
				waterfall_rows(spans_of_transaction(item.get("id"), event))
				if item.get("type") == "transaction"
				else None
			),
		)
		return Page("event.html", context)

	def _traces(self, request: aiohttp.web.Request) -> Page:
		return Page("traces.html", {"page": "traces", "traces": self.Store.traces(limit=200)})

	def _siblings(self, item: dict) -> dict[str, typing.Any]:
		"""The previous and next event of the same issue, and this one's place among them."""
		if not item.get("issue_id"):
			return {}
		ids = [i["id"] for i in self.Store.list(issue_id=item["issue_id"], limit=1000, newest_first=False)]
		if item.get("id") not in ids:
			return {}
		at = ids.index(item["id"])
		return {
			"position": at + 1,
			"total": len(ids),
			"previous": ids[at - 1] if at > 0 else None,
			"next": ids[at + 1] if at + 1 < len(ids) else None,
		}

	def _trace(self, request: aiohttp.web.Request) -> Page:
		trace_id = request.match_info["trace_id"]
		trace = self.Store.trace(trace_id)
		if trace is None:
			return self._missing("trace {}".format(trace_id[:64]))
		spans = []
		for span in trace.get("spans") or []:
			start = _seconds(span.get("start"))
			if start is None:
				continue
			end = _seconds(span.get("end"))
			spans.append(
				Span(
					_text(span.get("span_id")),
					_text(span.get("parent_span_id") or ""),
					_text(span.get("name") or span.get("op") or "span"),
					_text(span.get("op") or ""),
					start,
					end if end is not None and end >= start else start,
					_text(span.get("status") or ""),
					span.get("item_id") if span.get("source") == "transaction" else None,
				)
			)
		return Page(
			"trace.html",
			{"page": "traces", "trace": trace, "trace_id": trace_id, "waterfall": waterfall_rows(spans)},
		)

	def _logs(self, request: aiohttp.web.Request) -> Page:
		filters = Filters(request.query)
		records = []
		if not filters.Errors:
			common = filters.common()
			records = self.Store.logs(
				level=common["level"],
				text=common["text"],
				attribute=common["tag"],
				release=common["release"],
				environment=common["environment"],
				since=common["since"],
				limit=500,
			)
		return Page("logs.html", {"page": "logs", "filters": filters, "records": [_log_view(r) for r in records]})

	def _checkins(self, request: aiohttp.web.Request) -> Page:
		checkins = []
		for row in self.Store.check_ins(limit=500):
			duration = row.get("duration")
			checkins.append(
				dict(row, duration="{:.2f}s".format(duration) if isinstance(duration, (int, float)) else "")
			)
		return Page("checkins.html", {"page": "checkins", "checkins": checkins})

	# Other handlers

	async def raw(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		item = await asyncio.get_running_loop().run_in_executor(None, self._item, request)
		if item is None:
			return aiohttp.web.json_response({"detail": "no such item"}, status=404)
		return aiohttp.web.Response(
			text=clean_text(_pretty(item)),
			content_type="application/json",
			headers={"X-Content-Type-Options": "nosniff"},
		)

	async def clear(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		await asyncio.get_running_loop().run_in_executor(None, self.Store.clear)
		if self.Live is not None:
			self.Live.clear()
		raise aiohttp.web.HTTPSeeOther("/")

	async def static(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		name = request.match_info["name"]
		types = {"ui.js": "text/javascript", "ui.css": "text/css"}
		if name not in types:
			raise aiohttp.web.HTTPNotFound()
		text = importlib.resources.files("asab_sentry.collector").joinpath("static", name).read_text("utf-8")
		return aiohttp.web.Response(
			text=text,
			content_type=types[name],
			headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
		)


def _facts(event: dict) -> list[tuple[str, str]]:
	# Relay's normalizer moves server_name into the tags, as Sentry does
	server = event.get("server_name") or payloads.tags(event).get("server_name")
	facts = [("Server", _text(server))] if server else []
	facts += [
		(label, _text(event.get(key)))
		for label, key in (("Logger", "logger"), ("Platform", "platform"))
		if event.get(key)
	]
	sdk = _dict(event.get("sdk"))
	if sdk:
		facts.append(("SDK", "{} {}".format(_text(sdk.get("name")), _text(sdk.get("version"))).strip()))
	return facts


def _log_view(record: dict) -> dict[str, typing.Any]:
	attributes = _dict(record.get("attributes"))
	seconds = _seconds(record.get("timestamp"))
	return {
		"time": _local(seconds),
		"level": _text(record.get("level") or ""),
		"body": _text(record.get("body") or ""),
		"trace_id": _text(record.get("trace_id") or ""),
		"release": _text(record.get("release") or ""),
		"environment": _text(record.get("environment") or ""),
		"attributes": sorted((_text(k), _text(_attribute_value(v))) for k, v in attributes.items()),
	}


# Who may see the pages: the UI and the read API answer loopback clients only (unless ``remote``), to
# hostnames that cannot be rebound (an IP literal or ``localhost``), and change things only for same-origin
# requests. Ingest (``POST /api/<project>/envelope/`` and ``/store/``, ``POST /stream``) and ``/health`` are
# open to whoever the collector listens to.

_INGEST = re.compile(r"^/api/[^/]+/(envelope|store)/?$")
_IP_OR_LOCALHOST = re.compile(
	r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]|localhost|[A-Za-z0-9-]+\.localhost)(:\d{1,5})?$"
)


def is_ingest(request: aiohttp.web.Request) -> bool:
	path = request.path
	if path == "/health":
		return True
	if request.method in ("POST", "OPTIONS") and (path == "/stream" or _INGEST.match(path)):
		return True
	return False


def _is_loopback(address: str | None) -> bool:
	import ipaddress

	if not address:
		return False
	try:
		ip = ipaddress.ip_address(address.split("%", 1)[0])
	except ValueError:
		return address.startswith("/")  # a unix socket
	if ip.version == 6 and ip.ipv4_mapped is not None:
		ip = ip.ipv4_mapped
	return ip.is_loopback


def guard(remote: bool = False) -> typing.Any:
	"""
	The aiohttp middleware that keeps the UI and read API to the developer's machine.

	Args:
		remote: also answer clients that are not on loopback, by any host name (``[collector] remote_read``).
	"""

	@aiohttp.web.middleware
	async def middleware(request: aiohttp.web.Request, handler: typing.Any) -> aiohttp.web.StreamResponse:
		if is_ingest(request):
			return await handler(request)
		if not remote and not _is_loopback(request.remote):
			return aiohttp.web.json_response(
				{
					"detail": "the collector's UI and read API answer loopback clients only ([collector] remote_read=yes)"
				},
				status=403,
			)
		if not remote and not _IP_OR_LOCALHOST.match(request.headers.get("Host", "")):
			return aiohttp.web.json_response(
				{"detail": "open the UI as http://127.0.0.1:<port>/ or http://localhost:<port>/"}, status=421
			)
		if request.method not in ("GET", "HEAD", "OPTIONS"):
			origin = request.headers.get("Origin")
			site = request.headers.get("Sec-Fetch-Site")
			if (origin is not None and origin != "{}://{}".format(request.scheme, request.host)) or (
				site is not None and site not in ("same-origin", "none")
			):
				return aiohttp.web.json_response({"detail": "cross-site request refused"}, status=403)
		return await handler(request)

	return middleware
