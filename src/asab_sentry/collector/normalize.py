"""
Payload shapes the Sentry protocol allows, made one shape when the collector stores them, so that the
viewer, the web UI and the JSON API never see the raw variants.

Events, transactions and feedback go through Relay's own normalizer (``sentry_relay.processing.StoreNormalizer``,
the ``sentry-relay`` package of the ``collector`` extra) when it is installed, after a small pre-pass that fixes
what Relay would otherwise drop (numbers sent as strings, lone surrogates it cannot parse). Without it, or when
it refuses a payload, a fallback does the same for the fields the collector reads. Either way the stored event
has:

- ``exception``, ``breadcrumbs`` and ``threads`` as ``{"values": [...]}`` (the protocol also allows a list);
- ``timestamp`` / ``start_timestamp`` (also of breadcrumbs and spans) as Unix seconds (float), from a number,
  a numeric string or an ISO 8601 date;
- ``lineno`` / ``colno`` of frames as integers;
- ``level`` one of ``fatal``, ``error``, ``warning``, ``info``, ``debug`` (``error`` when it is anything else);
- the message in ``logentry`` (``{"formatted": ..., "message": template, "params": [...]}``);
- ``tags`` as a list of ``[key, value]`` pairs of strings;
- release, environment, event_id as strings or absent;
- text with lone UTF-16 surrogates repaired (U+FFFD), so it can be stored and printed.

Relay's output is kept as it is (with its ``errors`` list naming invalid fields it removed; ``server_name``
becomes a tag, as in Sentry), except for the ``_meta`` annotations and what it invents: a trace context for
events that had none, the status ``unknown`` of a trace context that had no status.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
import typing

L = logging.getLogger(__name__)

try:
	from sentry_relay.processing import StoreNormalizer
except ImportError:  # the optional "collector" extra is not installed: the fallback does the work
	StoreNormalizer = None

LEVELS = ("fatal", "error", "warning", "info", "debug")
_LEVEL_ALIASES = {"warn": "warning", "critical": "fatal", "log": "info", "trace": "debug"}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# Fields whose variants Relay does not take (numbers as strings, level aliases): the pre-pass is needed.
_NEEDS_PREPARE = re.compile(
	rb'"(?:timestamp|start_timestamp|lineno|colno)"\s*:\s*"\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?\s*"'
	rb'|"level"\s*:\s*(?!"(?:fatal|error|warning|info|debug)")'
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def has_relay() -> bool:
	"""Whether Relay's normalizer is installed (``pip install asab-sentry[collector]``)."""
	return StoreNormalizer is not None


def clean_text(value: str) -> str:
	"""``value`` with lone surrogates replaced by U+FFFD (they cannot be encoded as UTF-8)."""
	return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def repair_surrogates(value: typing.Any) -> typing.Any:
	"""A copy of a parsed JSON value with every string repaired by `clean_text` (iterative: any depth)."""
	if isinstance(value, str):
		return clean_text(value)
	if not isinstance(value, (dict, list)):
		return value
	root: list[typing.Any] = [value]
	stack: list[tuple[typing.Any, typing.Any, typing.Any]] = [(root, 0, value)]
	while stack:
		parent, key, node = stack.pop()
		if isinstance(node, dict):
			copy: typing.Any = {}
			for k, v in node.items():
				copy[clean_text(k) if isinstance(k, str) else k] = v
			parent[key] = copy
			for k, v in copy.items():
				if isinstance(v, str):
					copy[k] = clean_text(v)
				elif isinstance(v, (dict, list)):
					stack.append((copy, k, v))
		elif isinstance(node, list):
			copy = list(node)
			parent[key] = copy
			for i, v in enumerate(copy):
				if isinstance(v, str):
					copy[i] = clean_text(v)
				elif isinstance(v, (dict, list)):
					stack.append((copy, i, v))
	return root[0]


def to_seconds(value: typing.Any) -> float | None:
	"""Unix seconds from a number, a numeric string or an ISO 8601 date (naive dates are UTC); else None."""
	if isinstance(value, bool):
		return None
	if isinstance(value, (int, float)):
		number = float(value)
	elif isinstance(value, str):
		text = value.strip()
		if _NUMBER.match(text):
			number = float(text)
		else:
			if text[-1:] in ("Z", "z"):
				text = text[:-1] + "+00:00"
			try:
				moment = datetime.datetime.fromisoformat(text)
			except ValueError:
				return None
			if moment.tzinfo is None:
				moment = moment.replace(tzinfo=datetime.timezone.utc)
			number = moment.timestamp()
	else:
		return None
	if number != number or number in (float("inf"), float("-inf")) or not (0 <= number < 1e11):
		return None  # NaN, infinities, dates Python cannot show
	return number


def _to_int(value: typing.Any) -> int | None:
	if isinstance(value, bool):
		return None
	if isinstance(value, int):
		return value
	if isinstance(value, float) and value == value and abs(value) < 1e15:
		return int(value)
	if isinstance(value, str):
		try:
			return int(value.strip())
		except ValueError:
			return None
	return None


def level(value: typing.Any, default: str = "error") -> str:
	"""A Sentry level from what was sent (``warn`` → ``warning``, ``critical`` → ``fatal``; else ``default``)."""
	if isinstance(value, str):
		text = value.strip().lower()
		text = _LEVEL_ALIASES.get(text, text)
		if text in LEVELS:
			return text
	return default


def _values(container: typing.Any) -> list | None:
	if isinstance(container, list):
		return container
	if isinstance(container, dict) and isinstance(container.get("values"), list):
		return container["values"]
	return None


def _frames(exception_or_thread: dict) -> None:
	stacktrace = exception_or_thread.get("stacktrace")
	if not isinstance(stacktrace, dict):
		return
	frames = stacktrace.get("frames")
	if not isinstance(frames, list):
		stacktrace.pop("frames", None)
		return
	stacktrace["frames"] = [f for f in frames if isinstance(f, dict)]
	for frame in stacktrace["frames"]:
		for key in ("lineno", "colno"):
			if key in frame:
				number = _to_int(frame[key])
				if number is None or number < 0:
					frame.pop(key)
				else:
					frame[key] = number


def _timestamps(obj: dict, keys: tuple[str, ...] = ("timestamp", "start_timestamp")) -> None:
	for key in keys:
		if key in obj:
			seconds = to_seconds(obj[key])
			if seconds is None:
				obj.pop(key)
			else:
				obj[key] = seconds


def prepare(event: dict) -> dict:
	"""
	The pre-pass (in place, returns ``event``): list containers become ``{"values": [...]}``, numbers sent as
	strings and ISO dates become numbers, frames' line numbers integers, level names in any case and the
	aliases ``warn``, ``critical`` Sentry levels.
	"""
	for key in ("exception", "breadcrumbs", "threads"):
		if key in event:
			values = _values(event[key])
			if values is None:
				event.pop(key)
			else:
				event[key] = {"values": [v for v in values if isinstance(v, dict)]}
	for exception in (event.get("exception") or {}).get("values", []):
		_frames(exception)
	for thread in (event.get("threads") or {}).get("values", []):
		_frames(thread)
	if isinstance(event.get("stacktrace"), dict):
		_frames(event)
	for crumb in (event.get("breadcrumbs") or {}).get("values", []):
		_timestamps(crumb, ("timestamp",))
	_timestamps(event)
	if isinstance(event.get("level"), str):
		known = level(event["level"], "")
		if known:
			event["level"] = known
	if isinstance(event.get("spans"), list):
		event["spans"] = [s for s in event["spans"] if isinstance(s, dict)]
		for span in event["spans"]:
			_timestamps(span)
	return event


def _fallback(event: dict, item_type: str) -> dict:
	"""What Relay would do to the fields the collector reads, when Relay is absent or refuses the event."""
	event["level"] = level(event.get("level"), "info" if item_type == "transaction" else "error")
	for key in ("release", "environment", "event_id", "transaction", "logger", "platform", "server_name", "culprit"):
		value = event.get(key)
		if value is None:
			continue
		if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("release", "environment"):
			event[key] = str(value)
		elif not isinstance(value, str):
			event.pop(key)
	logentry = event.get("logentry")
	message = event.pop("message", None)
	if not isinstance(logentry, dict):
		logentry = {}
		if isinstance(message, dict):
			logentry = {k: message[k] for k in ("message", "formatted", "params") if k in message}
		elif isinstance(message, str):
			logentry = {"formatted": message}
	for key in ("message", "formatted"):
		if key in logentry and not isinstance(logentry[key], str):
			logentry[key] = json.dumps(logentry[key], default=str)
	if logentry.get("message") and not logentry.get("formatted"):
		params = logentry.get("params")
		try:
			logentry["formatted"] = (
				logentry["message"] % tuple(params) if isinstance(params, list) and params else logentry["message"]
			)
		except (TypeError, ValueError):
			logentry["formatted"] = logentry["message"]
	if logentry:
		event["logentry"] = logentry
	else:
		event.pop("logentry", None)
	tags = event.get("tags")
	if isinstance(tags, dict):
		event["tags"] = [[str(k), str(v)] for k, v in tags.items() if v is not None]
	elif isinstance(tags, list):
		event["tags"] = [
			[str(p[0]), str(p[1])] for p in tags if isinstance(p, (list, tuple)) and len(p) == 2 and p[1] is not None
		]
	elif tags is not None:
		event.pop("tags")
	for key in ("contexts", "extra", "user", "request", "sdk"):
		if key in event and not isinstance(event[key], dict):
			event.pop(key)
	fingerprint = event.get("fingerprint")
	if fingerprint is not None:
		if isinstance(fingerprint, list):
			event["fingerprint"] = [str(p) for p in fingerprint if isinstance(p, (str, int, float)) and p != ""]
		else:
			event.pop("fingerprint")
	if item_type == "transaction":
		event["type"] = "transaction"
	return event


class Normalizer:
	"""
	Normalizes event-like payloads (``event``, ``transaction``, ``feedback``) for storage; see the module's
	docstring for the shape. Thread-safe.

	Args:
		use_relay: use Relay's normalizer when it is installed (default); False: the fallback only.
	"""

	def __init__(self, use_relay: bool = True):
		self._relay = StoreNormalizer(project_id=1) if (use_relay and StoreNormalizer is not None) else None
		self.UsesRelay = self._relay is not None
		self._lock = threading.Lock()  # Relay's native object is not documented as thread-safe

	def event(self, event: dict, item_type: str = "event", raw: bytes | None = None) -> dict:
		"""
		A normalized copy of ``event`` (a parsed JSON object; ``raw``: the JSON text it was parsed from, which
		makes the copy cheaper); never raises for any JSON object.

		Raises:
			RecursionError: the object is nested deeper than Python's JSON encoder goes.
		"""
		contexts = event.get("contexts")
		trace = contexts.get("trace") if isinstance(contexts, dict) else None
		had_trace = isinstance(trace, dict)
		had_status = had_trace and "status" in trace
		clean = raw is not None and not _ESCAPED_SURROGATE.search(raw)
		if self._relay is not None and clean and not _NEEDS_PREPARE.search(raw):
			# Nothing the pre-pass would change: Relay reads the text as it came (the common case, cheapest).
			try:
				with self._lock:
					out = self._relay.normalize_event(raw_event=raw)
				return self._relay_output(out, item_type, had_trace, had_status)
			except Exception as e:
				L.debug("Relay's normalizer refused an event: %s", e)
		event = prepare(json.loads(raw) if clean else repair_surrogates(event))  # a copy: the caller's is kept
		if self._relay is not None:
			try:
				with self._lock:
					out = self._relay.normalize_event(event=event)
			except Exception as e:  # Relay refuses some payloads outright; the fallback still keeps them
				L.debug("Relay's normalizer refused an event: %s", e)
			else:
				return self._relay_output(out, item_type, had_trace, had_status)
		return _fallback(event, item_type)

	@staticmethod
	def _relay_output(out: dict, item_type: str, had_trace: bool, had_status: bool) -> dict:
		out.pop("_meta", None)
		out.pop("project", None)
		contexts = out.get("contexts")
		if isinstance(contexts, dict) and isinstance(contexts.get("trace"), dict):
			if not had_trace:
				contexts.pop("trace")
				if not contexts:
					out.pop("contexts")
			elif not had_status and contexts["trace"].get("status") == "unknown":
				contexts["trace"].pop("status")
		if item_type == "feedback":
			out["type"] = "feedback"
		return out


def attributes(value: typing.Any) -> dict[str, typing.Any]:
	"""
	Sentry's typed attributes (``{"key": {"value": v, "type": "string"}}``, used by logs and v2 spans) as
	plain ``{"key": v}``; plain values are kept.
	"""
	if not isinstance(value, dict):
		return {}
	result = {}
	for key, attribute in value.items():
		if isinstance(attribute, dict) and "value" in attribute:
			attribute = attribute["value"]
		result[str(key)] = attribute
	return result
