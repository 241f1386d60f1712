"""
What goes out, part two: Sentry's size limits, and bounded copies of data that enters an event.

- **Events fit.** Sentry drops an event over 1 MB uncompressed or 200 KB compressed (HTTP 413); sentry-sdk
  sends it anyway. `fit_event` trims an oversized serialized event step by step (`TRIM_STEPS`: breadcrumb
  data, the oldest breadcrumbs, frame local variables beyond the innermost frames, source context, big
  ``extra`` values, big contexts, span data and spans) until it fits, records what it trimmed in the
  ``asab_sentry`` context, and when even that is not enough sends a minimal event (exception types and
  values with their innermost frames, the message, tags and the trace context). The prior art is
  sentry-java's ``EventSizeLimitingUtils``.
- **Data is bounded when it enters.** `bounded` turns any Python value into JSON-safe data of limited depth,
  breadth, total size and string length (lone surrogates replaced, broken ``repr`` as a placeholder). It
  serves ``set_context`` (a million keys or 150 levels no longer make every later event unusable) and ASAB
  ``struct_data`` (`Bag`: every key a record carries is kept, unlike sentry-sdk's 10-key trim of ``extra``).
- **One final pass.** `FinalPass` is registered as ``before_send`` and ``before_send_transaction``: every
  event, whatever put bad data into the scope, leaves scrubbed (`scrub.Scrubber`), with valid text, and
  within the limits.

All functions work on plain dicts, so other code (e.g. a lazy breadcrumb builder) can call them.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import json
import logging
import marshal
import math
import operator
import threading
import typing
import uuid
import zlib

from . import notices, scrub

#: Sentry's limit for one event, uncompressed (bytes of the JSON payload).
MAX_EVENT_BYTES = 1_000_000

#: Sentry's limit for one event, compressed.
MAX_COMPRESSED_BYTES = 200_000

#: Frames (innermost first) of each stack trace that keep their local variables when an event is trimmed.
INNERMOST_FRAMES_WITH_LOCALS = 5

#: Frames (innermost) of each stack trace kept in a minimal event.
MINIMAL_EVENT_FRAMES = 30

#: Limits of `bounded` data: nesting depth (as sentry-sdk's ``extra``), items per level, items in total.
MAX_DEPTH = 5
MAX_BREADTH = 1000
MAX_NODES = 10000

#: Longest string in bounded data when sentry-sdk's ``max_value_length`` is not known.
DEFAULT_MAX_LENGTH = 8192

TRIM_STEPS = (
	"breadcrumb data",
	"oldest breadcrumbs",
	"frame locals beyond the innermost frames",
	"all frame locals",
	"source context",
	"extra values",
	"contexts",
	"span data",
	"spans",
)

# (NaN only in events built by hand, e.g. web transactions: their encoder writes null; the size is what matters here)
_COMPACT = {"allow_nan": True, "separators": (",", ":")}
_PLACEHOLDER = "[trimmed: {} bytes]"


def encode(event: typing.Mapping[str, typing.Any]) -> bytes:
	"""
	The event as sentry-sdk puts it on the wire (compact JSON, ASCII). A datetime becomes ISO 8601 UTC text,
	any other object that JSON cannot carry its ``repr`` (only events built by hand hold such values).
	"""
	return json.dumps(event, default=_json_default, **_COMPACT).encode("ascii")  # type: ignore[arg-type]


#: sentry-sdk's own encoding of a payload (``sentry_sdk.utils.json_dumps``: no NaN, no fallback for other types).
_exact = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def _encode_exact(value: typing.Any) -> tuple[bytes, bool]:
	"""(`encode` (value), whether it is byte for byte what sentry-sdk's ``json_dumps`` makes of it)."""
	try:
		return _exact(value).encode("ascii"), True
	except (TypeError, ValueError):  # a NaN, a datetime, another object: sentry-sdk would not send it as it is
		return encode(value), False


def _json_default(value: typing.Any) -> typing.Any:
	if isinstance(value, datetime.datetime):
		if value.tzinfo is not None:
			value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
		return value.isoformat() + "Z"
	return notices.safe_repr(value, DEFAULT_MAX_LENGTH)


def _size(data: typing.Any) -> int:
	return len(json.dumps(data, **_COMPACT))  # type: ignore[arg-type]


# Bounded data


class _Budget:
	__slots__ = ("nodes", "max_length")

	def __init__(self, nodes: int, max_length: int) -> None:
		self.nodes = nodes
		self.max_length = max_length


def bounded(
	value: typing.Any,
	max_depth: int = MAX_DEPTH,
	max_breadth: int = MAX_BREADTH,
	max_nodes: int = MAX_NODES,
	max_length: int | None = None,
) -> typing.Any:
	"""
	A JSON-safe copy of ``value``: mappings (string keys), lists, strings, numbers, booleans and None.

	Deeper than ``max_depth`` a value becomes its ``repr``; a mapping or sequence keeps its first
	``max_breadth`` items and says how many it left out (a ``"..."`` key / item); after ``max_nodes`` values in
	total the rest is left out the same way; strings are cut at ``max_length`` (default: sentry-sdk's
	``max_value_length``) and lone surrogates replaced. Objects become their ``repr`` (a placeholder when it
	raises); cycles are marked. Never raises.

	>>> bounded({"a": [1, 2, 3], "b": object}, max_breadth=2)
	{'a': [1, 2, '... 1 more items'], 'b': "<class 'object'>"}
	"""
	if max_length is None:
		max_length = _client_max_length()
	budget = _Budget(max_nodes, max_length)
	try:
		return _bounded(value, max_depth, max_breadth, budget, set())
	except Exception:
		return "<{} value that cannot be sent>".format(notices._type_name(value))


def _client_max_length() -> int:
	try:
		import sentry_sdk

		length = sentry_sdk.get_client().options.get("max_value_length")
		return int(length) if length else DEFAULT_MAX_LENGTH
	except Exception:
		return DEFAULT_MAX_LENGTH


def _text(value: str, budget: _Budget) -> str:
	if len(value) > budget.max_length:
		value = value[: max(budget.max_length - 3, 0)] + "..."
	return scrub.sanitize_text(value)


def _bounded(value: typing.Any, depth: int, breadth: int, budget: _Budget, path: set[int]) -> typing.Any:
	budget.nodes -= 1
	if value is None or isinstance(value, bool):
		return value
	if isinstance(value, str):
		return _text(str(value), budget)
	if isinstance(value, int):
		if isinstance(value, enum.Enum):
			return _text(notices.safe_str(value), budget)
		if value.bit_length() > 63:
			return _text(notices.safe_repr(value, budget.max_length), budget)
		return int(value)
	if isinstance(value, float):
		return float(value) if math.isfinite(value) else repr(float(value))
	if isinstance(value, (bytes, bytearray)):
		return _text(bytes(value[: budget.max_length]).decode("utf-8", "replace"), budget)
	if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
		return value.isoformat()
	annotated = getattr(value, "value", None) if type(value).__name__ == "AnnotatedValue" else None
	if annotated is not None:  # sentry-sdk's marker for filtered data
		return _bounded(annotated, depth, breadth, budget, path)
	is_mapping = isinstance(value, typing.Mapping)
	is_sequence = isinstance(value, (list, tuple, set, frozenset))
	if not (is_mapping or is_sequence):
		return _text(notices.safe_repr(value, budget.max_length), budget)
	if depth <= 0:
		return _text(notices.safe_repr(value, budget.max_length), budget)
	if id(value) in path:
		return "<cyclic>"
	path.add(id(value))
	try:
		if is_mapping:
			out: dict[str, typing.Any] = {}
			items = iter(value.items())
			for key, item in itertools.islice(items, breadth):
				if budget.nodes <= 0:
					break
				name = _text(key if isinstance(key, str) else notices.safe_str(key), budget)
				out[name] = _bounded(item, depth - 1, breadth, budget, path)
			left = _remaining(value, len(out))
			if left:
				out["..."] = "{} more keys".format(left)
			return out
		result = []
		for item in itertools.islice(iter(value), breadth):
			if budget.nodes <= 0:
				break
			result.append(_bounded(item, depth - 1, breadth, budget, path))
		left = _remaining(value, len(result))
		if left:
			result.append("... {} more items".format(left))
		return result
	finally:
		path.discard(id(value))


def _remaining(container: typing.Any, taken: int) -> int:
	try:
		return max(len(container) - taken, 0)
	except Exception:
		return 0


class Bag(dict):  # type: ignore[type-arg]
	"""
	A dict that sentry-sdk's serializer renders with `bounded` (up to `MAX_BREADTH` keys per level) instead
	of trimming it to 10 keys. Used for ASAB ``struct_data`` in ``extra`` and breadcrumb data; anything merged
	into it later (e.g. the scope's extras) is bounded the same way.
	"""

	__slots__ = ()

	def __sentry_repr__(self) -> typing.Any:
		return bounded(dict(self))


# Size limits


def _over(
	event: dict[str, typing.Any], max_bytes: int, max_compressed: int, size: int | None = None
) -> tuple[int, int]:
	"""(uncompressed size, the uncompressed size it must get down to; 0 when it fits)."""
	raw = None
	if size is None:
		raw = encode(event)
		size = len(raw)
	if size > max_bytes:
		return size, max_bytes
	if size > max_compressed:
		# Level 1 (fast) compresses no better than the transport's level 9; plus room for the gzip header.
		compressed = len(zlib.compress(raw if raw is not None else encode(event), 1)) + 64
		if compressed > max_compressed:
			return size, int(size * max_compressed / compressed * 0.9)
	return size, 0


def _stacktraces(event: dict[str, typing.Any]) -> list[list[dict[str, typing.Any]]]:
	"""Frame lists of the event, each ordered outermost → innermost."""
	stacks = []
	for section in ("exception", "threads"):
		container = event.get(section)
		values = container.get("values") if isinstance(container, dict) else None
		for value in values if isinstance(values, list) else ():
			stacktrace = value.get("stacktrace") if isinstance(value, dict) else None
			frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
			if isinstance(frames, list):
				stacks.append([f for f in frames if isinstance(f, dict)])
	stacktrace = event.get("stacktrace")
	if isinstance(stacktrace, dict) and isinstance(stacktrace.get("frames"), list):
		stacks.append([f for f in stacktrace["frames"] if isinstance(f, dict)])
	return stacks


def _breadcrumbs(event: dict[str, typing.Any]) -> list[typing.Any]:
	crumbs = event.get("breadcrumbs")
	values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
	return values if isinstance(values, list) else []


def _trim_step(step: str, event: dict[str, typing.Any], size: int, target: int) -> tuple[int, str]:
	"""Apply one step until the estimated size is at most ``target``; return (estimate, what was done)."""
	count = 0
	if step == "breadcrumb data":
		crumbs = _breadcrumbs(event)
		for index, crumb in enumerate(crumbs):
			if size <= target:
				break
			if isinstance(crumb, dict) and crumb.get("data"):
				size -= _size(crumb["data"])
				# A copy: serialized breadcrumbs may be shared by several events (breadcrumbs.py).
				crumbs[index] = {k: v for k, v in crumb.items() if k != "data"}
				count += 1
		return size, "data of {} breadcrumbs".format(count) if count else ""
	if step == "oldest breadcrumbs":
		crumbs = _breadcrumbs(event)
		while crumbs and size > target:
			size -= _size(crumbs.pop(0)) + 1
			count += 1
		return size, "{} oldest breadcrumbs".format(count) if count else ""
	if step in ("frame locals beyond the innermost frames", "all frame locals", "source context"):
		keep = INNERMOST_FRAMES_WITH_LOCALS if step.startswith("frame") else 0
		keys = ("pre_context", "post_context") if step == "source context" else ("vars",)
		for frames in _stacktraces(event):
			for frame in frames[: max(len(frames) - keep, 0)]:
				if size <= target:
					break
				for key in keys:
					if key in frame:
						size -= _size(frame.pop(key)) + len(key) + 4
						count += 1
		return size, "{} of {} frames".format(
			"source lines" if keys[0] != "vars" else "local variables", count
		) if count else ""
	if step in ("extra values", "contexts", "span data"):
		if step == "span data":
			spans = event.get("spans")
			holders = (
				[(s, "data") for s in spans if isinstance(s, dict) and s.get("data")] if isinstance(spans, list) else []
			)
		else:
			container = event.get("extra" if step == "extra values" else "contexts")
			if not isinstance(container, dict):
				return size, ""
			holders = [(container, k) for k in container if k not in ("trace", "asab_sentry")]
		sized = sorted(((_size(h[k]), h, k) for h, k in holders), key=lambda t: t[0], reverse=True)
		for value_size, holder, key in sized:
			if size <= target or value_size < 200:
				break
			if step == "contexts":
				holder[key] = {"trimmed": _PLACEHOLDER.format(value_size)}
			elif step == "span data":
				holder[key] = {}
			else:
				holder[key] = _PLACEHOLDER.format(value_size)
			size -= value_size - 40
			count += 1
		names = {"extra values": "extra values", "contexts": "contexts", "span data": "data of spans"}
		return size, "{} {}".format(count, names[step]) if count else ""
	if step == "spans":
		spans = event.get("spans")
		while isinstance(spans, list) and spans and size > target:
			size -= _size(spans.pop()) + 1
			count += 1
		return size, "{} spans".format(count) if count else ""
	return size, ""


def minimal_event(
	event: dict[str, typing.Any],
	max_length: int = 1000,
	max_frames: int = MINIMAL_EVENT_FRAMES,
	max_values: int = 20,
) -> dict[str, typing.Any]:
	"""
	The smallest useful form of an event: identity, level, message, the last ``max_values`` exceptions' types
	and values (cut at ``max_length``) with their innermost ``max_frames`` frames (no locals, no source), tags
	and the trace context.
	"""
	keep = (
		"event_id",
		"timestamp",
		"start_timestamp",
		"type",
		"platform",
		"level",
		"logger",
		"transaction",
		"transaction_info",
		"release",
		"dist",
		"environment",
		"server_name",
		"fingerprint",
		"sdk",
	)
	small: dict[str, typing.Any] = {k: event[k] for k in keep if k in event}
	tags = event.get("tags")
	if isinstance(tags, dict):
		small["tags"] = {str(k)[:32]: str(v)[:200] for k, v in itertools.islice(tags.items(), 50)}
	contexts = event.get("contexts")
	if isinstance(contexts, dict) and isinstance(contexts.get("trace"), dict):
		small["contexts"] = {"trace": contexts["trace"]}
	for key in ("logentry", "message"):
		value = event.get(key)
		if isinstance(value, str):
			small[key] = value[:max_length]
		elif isinstance(value, dict):
			small[key] = {
				k: v[:max_length] for k, v in value.items() if k in ("message", "formatted") and isinstance(v, str)
			}
	exception = event.get("exception")
	values = exception.get("values") if isinstance(exception, dict) else None
	if isinstance(values, list):
		out = []
		for value in values[-max_values:]:
			if not isinstance(value, dict):
				continue
			item = {k: value[k] for k in ("type", "module", "mechanism") if k in value}
			if isinstance(value.get("value"), str):
				item["value"] = value["value"][:max_length]
			stacktrace = value.get("stacktrace")
			frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
			if isinstance(frames, list):
				item["stacktrace"] = {
					"frames": [
						{k: f[k] for k in ("filename", "abs_path", "function", "module", "lineno", "in_app") if k in f}
						for f in frames[-max_frames:]
						if isinstance(f, dict)
					]
				}
			out.append(item)
		small["exception"] = {"values": out}
	if event.get("type") == "transaction":
		small["spans"] = []
	return small


def fit_event(
	event: dict[str, typing.Any],
	max_bytes: int = MAX_EVENT_BYTES,
	max_compressed: int = MAX_COMPRESSED_BYTES,
	size: int | None = None,
) -> tuple[dict[str, typing.Any], list[str]]:
	"""
	Return ``(event, what was trimmed)``: the serialized ``event`` itself when it is within Sentry's limits,
	else trimmed by `TRIM_STEPS` in order (``event`` is modified), or a `minimal_event`. A trimmed event
	carries the list in its ``asab_sentry`` context (``trimmed``, ``original_size``). ``size``: the length of
	`encode` of the event, when the caller knows it.
	"""
	size, target = _over(event, max_bytes, max_compressed, size)
	if not target:
		return event, []
	original = size
	done: list[str] = []

	def record(event: dict[str, typing.Any]) -> None:
		# Recorded before measuring again: the record is part of what must fit.
		contexts = event.get("contexts")
		if not isinstance(contexts, dict):
			contexts = event["contexts"] = {}
		contexts["asab_sentry"] = {"trimmed": list(done), "original_size": original}

	for step in TRIM_STEPS:
		estimate, note = _trim_step(step, event, size, target - 300)
		if not note:
			continue
		done.append(note)
		if estimate > target - 300:
			size = estimate  # still over by the step's own count: on to the next step without encoding again
			continue
		record(event)
		size, target = _over(event, max_bytes, max_compressed)
		if not target:
			return event, done
	done.append("all but the exception, message, tags and trace (minimal event)")
	for frames, values, length in ((MINIMAL_EVENT_FRAMES, 20, 1000), (5, 3, 200), (1, 1, 100)):
		small = minimal_event(event, max_length=length, max_frames=frames, max_values=values)
		record(small)
		if not _over(small, max_bytes, max_compressed)[1]:
			break
	return small, done


# The final pass

_active: list[FinalPass] = []

_DSC = "dynamic_sampling_context"

#: thread id -> (event, its values, its JSON as sent, its trace context or None): the encoding the final pass
#: made of the last event it let through in that thread, for `take_encoded`. sentry-sdk hands an event to the
#: transport in the thread and the ``capture_event`` call that ran ``before_send`` on it, before that thread
#: captures anything else, so one per thread is enough. Bounded: an event sentry-sdk drops after
#: ``before_send`` (its error sampler), or a transport that never asks, leaves its encoding here until the
#: thread's next event; and an event kept stays in memory only that long (not, in an error storm, long enough
#: to be promoted to the garbage collector's oldest generation by the dozen).
_encoded: dict[int, tuple[dict, tuple, bytes, dict | None]] = {}
_MAX_ENCODED = 64
#: ... and at most this many bytes of them (events dropped by the sampler may be up to `MAX_EVENT_BYTES` each).
_MAX_ENCODED_BYTES = 4_000_000
_encoded_bytes = [0]

#: Stands for the breadcrumbs while the rest of an event is encoded (never in any real event).
_CRUMBS_TOKEN = "asab-sentry-breadcrumbs-{}".format(uuid.uuid4().hex)
_CRUMBS_TOKEN_JSON = json.dumps(_CRUMBS_TOKEN).encode("ascii")
_SECOND, _THIRD, _FOURTH, _FIFTH = (operator.itemgetter(n) for n in (1, 2, 3, 4))


class Deferred(bytes):
	"""What `take_encoded` gives for an event whose pass was left to the delivery process: `FinalPass._pack`'s bytes."""


def finish(packed: bytes) -> bytes:
	"""`FinalPass.finish` of the running SentryService's final pass (`install`), or of a default one."""
	final_pass = _active[0] if _active else FinalPass(keep_encoding=True)
	return final_pass.finish(packed)


def json_dumps(data: typing.Any) -> bytes:
	"""JSON as ``sentry_sdk.utils.json_dumps`` makes it (compact, UTF-8, no NaN), which an envelope's items are."""
	return json.dumps(data, allow_nan=False, separators=(",", ":")).encode("utf-8")


def take_encoded(event: typing.Any) -> bytes | None:
	"""
	The JSON of ``event`` exactly as ``sentry_sdk.utils.json_dumps`` would encode it now, when the final pass
	(``before_send`` / ``before_send_transaction``) already encoded it and nothing changed since but what
	sentry-sdk's ``capture_event`` does after ``before_send``: it moves ``contexts.trace.dynamic_sampling_context``
	into the envelope's header (the encoding is made without it). None otherwise (a changed or unknown event).
	Each encoding is given once. For an event whose pass was left to the delivery process, a `Deferred`.
	"""
	known = _pop_encoded(event)
	if known is None:
		return None
	_, values, raw, trace = known
	if len(values) != len(event) or any(a is not b for a, b in zip(values, event.values(), strict=True)):
		return None  # a top-level value replaced, added or removed (e.g. sentry-sdk's gen_ai spans split off)
	if trace is not None and _DSC in trace:
		return None  # the encoding left it out, sentry-sdk did not
	return raw


def install(final_pass: FinalPass) -> None:
	"""Make ``final_pass`` the one `finalize` uses (the running SentryService's)."""
	_active[:] = [final_pass]


def uninstall() -> None:
	"""Forget the installed final pass (`finalize` then uses a default one)."""
	_active.clear()


def finalize(event: dict[str, typing.Any]) -> dict[str, typing.Any]:
	"""
	Pass an event that does not go through sentry-sdk's ``before_send`` / ``before_send_transaction`` (one
	built and sent by this package itself, e.g. a web request's transaction) through the final pass of the
	running SentryService: scrubbed, valid text, within Sentry's limits. Never raises.
	"""
	final_pass = _active[0] if _active else FinalPass()
	result = final_pass._run(event, {}, False)
	if result is not None:
		_pop_encoded(result)  # its caller encodes it its own way
	return result if result is not None else event


class FinalPass:
	"""
	``before_send`` / ``before_send_transaction``: scrub, repair text, fit the size limits; never raises.

	Args:
		scrubber: the `scrub.Scrubber` to use (default: the one `scrub.configure` set up).
		max_bytes, max_compressed: the size limits.
		before: a ``before_send`` step run first (e.g. `breadcrumbs.restore`, which completes the event).
		keep_encoding: keep the JSON the pass makes of each event for the transport (`take_encoded`), so that
			an event is encoded once (asab_sentry.speed).

	Attributes:
		Defer: True when the transport is the delivery process (`asab_sentry.delivery.process`), which finishes the
			pass of error events (`finish`) off the service's interpreter lock; set by SentryService. Needs
			``keep_encoding``. Transactions, and events passed with `finalize`, are done at once.
		Backlogged: True while more than ``[sentry] queue_max_size`` bytes wait for the delivery process (set by
			`asab_sentry.delivery.process.ProcessDelivery` at each hand-over): events are then done at once, as
			without ``Defer``, so that the service's own pace keeps the bounded feed from overflowing in a burst
			of big events.
	"""

	def __init__(
		self,
		scrubber: scrub.Scrubber | None = None,
		max_bytes: int = MAX_EVENT_BYTES,
		max_compressed: int = MAX_COMPRESSED_BYTES,
		before: typing.Callable[[dict, dict], dict | None] | None = None,
		keep_encoding: bool = False,
	) -> None:
		self.Scrubber = scrubber
		self.KeepEncoding = keep_encoding
		self.MaxBytes = max_bytes
		self.MaxCompressed = max_compressed
		self.Before = before
		self.Defer = False
		self.Backlogged = False
		self._deferred = False  # an event was left to the delivery process (`_defer`): see `fill_encoded`
		self._crumbs: dict[int, tuple[typing.Any, typing.Any, bytes, bool, bool]] = {}
		self._packed: dict[int, tuple[typing.Any, bytes]] = {}
		self._unpacked: dict[bytes, typing.Any] = {}

	def __call__(self, event: dict[str, typing.Any], hint: dict[str, typing.Any] | None = None) -> typing.Any:
		return self._run(event, hint, self.Defer and not self.Backlogged)

	def _run(self, event: dict[str, typing.Any], hint: dict[str, typing.Any] | None, defer: bool) -> typing.Any:
		try:
			if self.Before is not None:
				completed = self.Before(event, hint if hint is not None else {})
				if completed is None:
					return None
				event = completed
			if defer and self.KeepEncoding and type(event) is dict and "type" not in event:
				try:
					return self._defer(event)
				except (TypeError, ValueError):  # not marshal's plain data (a subclass, another object): done here
					pass
			return self.process(event)
		except Exception as e:
			return self._failed(event, e)

	def _failed(self, event: typing.Any, e: Exception) -> typing.Any:
		notices.say(
			"final pass",
			"An event could not be checked before sending ({}: {}); sent as a minimal event.".format(
				notices._type_name(e), notices.safe_str(e)
			),
			logging.ERROR,
		)
		try:
			return typing.cast(dict, scrub.sanitize(minimal_event(event)))
		except Exception:
			return event

	# Deferred to the delivery process (``[sentry] delivery = process``)

	def _defer(self, event: dict[str, typing.Any]) -> dict[str, typing.Any]:
		"""
		Leave the rest of the pass (`process`: scrubbing, text repair, size limits, encoding) of an error event to
		the delivery process: the event is kept packed (`Deferred`, for `take_encoded`) and returned as it is but
		for its contexts, scrubbed here because sentry-sdk moves the trace's dynamic sampling context out of them
		into the envelope's header, which the delivery process does not change (and that context's text repaired).
		The scrubbing is the same as `process` makes of them, and making it again changes nothing
		(`scrub.Scrubber.scrub_event`).
		Raises TypeError or ValueError when the event is not data marshal takes (a dict subclass, an object).
		"""
		contexts = event.get("contexts")
		if type(contexts) is dict:
			scrubber = self.Scrubber or scrub.active()
			contexts = event["contexts"] = {
				name: scrubber._scrub_context(name, value) for name, value in contexts.items()
			}
			trace = contexts.get("trace")
			dsc = trace.get(_DSC) if type(trace) is dict else None
			if dsc is not None and scrub.sanitize(dsc) is not dsc:
				# Valid text in the envelope's header too (a lone surrogate in the transaction's name): what `process`
				# makes of it, the same text being in the event (its ``transaction``).
				contexts["trace"] = dict(trace, **{_DSC: scrub.sanitize(dsc)})
		info = event.get("transaction_info")
		source = info.get("source") if type(info) is dict else None
		if isinstance(source, str) and type(source) is not str:
			# sentry-sdk's TransactionSource (a str enum, in every event after a transaction without a source, e.g.
			# SentryService.transaction()), which marshal does not take: the text, which is what JSON has of it.
			event["transaction_info"] = dict(info, source=str.__str__(source))
		_keep_encoded(event, Deferred(self._pack(event)))
		self._deferred = True
		return event

	def _pack(self, event: dict[str, typing.Any]) -> bytes:
		"""
		``event`` for `finish`, in marshal's format (version 2: no references). Breadcrumbs that consecutive events
		share (breadcrumbs.py serializes each once) are packed once each: id -> (breadcrumb, its bytes); the
		reference keeps the id from being reused.
		"""
		crumbs = event.get("breadcrumbs")
		values = crumbs.get("values") if type(crumbs) is dict and len(crumbs) == 1 else None
		if type(values) is not list or len(values) < 8:
			return _marshal((event, None))
		rest = dict(event)
		rest["breadcrumbs"] = None
		cache = self._packed
		ids = list(map(id, values))
		knowns = list(map(cache.get, ids))
		for index in [i for i, (k, c) in enumerate(zip(knowns, values, strict=True)) if k is None or k[0] is not c]:
			crumb = values[index]
			cache[id(crumb)] = knowns[index] = (crumb, _marshal(crumb))
		if len(cache) > len(ids) + 32:
			self._packed = dict(zip(ids, knowns, strict=True))
		return _marshal((rest, list(map(_SECOND, knowns))))

	def finish(self, packed: bytes) -> bytes:
		"""
		The JSON payload sentry-sdk would have sent of a `Deferred` event had the whole pass run in
		``before_send``: `process` (on failure, a minimal event, as ``before_send`` does), then what sentry-sdk's
		``capture_event`` does after ``before_send`` (the trace's dynamic sampling context leaves the event), then
		``sentry_sdk.utils.json_dumps`` unless the pass's own encoding is that already. Never raises but for a
		``packed`` that is not `_pack`'s (ValueError, EOFError, TypeError).
		"""
		event, crumbs = marshal.loads(packed)
		if crumbs is not None:
			# The same dict for the same bytes as in the previous events: the scrubbed and encoded breadcrumbs of
			# `_scrub_and_measure` are looked up by identity.
			cache = self._unpacked
			values = [cache.get(raw) or marshal.loads(raw) for raw in crumbs]
			self._unpacked = dict(zip(crumbs, values, strict=True))
			event["breadcrumbs"] = {"values": values}
		return self._finish(event)

	def _finish(self, event: dict[str, typing.Any]) -> bytes:
		"""`finish` of an event as it is (unpacked, or as sentry-sdk hands it to the transport)."""
		try:
			fitted = self.process(event)
		except Exception as e:
			fitted = self._failed(event, e)
		contexts = fitted.get("contexts", {}) if type(fitted) is dict else {}
		trace = contexts.get("trace") if type(contexts) is dict else None
		if type(trace) is dict:
			trace.pop(_DSC, None)
		raw = take_encoded(fitted)
		if raw is None or type(raw) is Deferred:
			try:
				raw = json_dumps(fitted)
			except (TypeError, ValueError) as e:  # a NaN or an object: what sentry-sdk would fail on
				fitted = self._failed(fitted, e)
				raw = encode(fitted)
		return raw

	def _scrub_and_measure(
		self, event: dict[str, typing.Any], scrubber: scrub.Scrubber
	) -> tuple[int, bool, bytes | None]:
		"""
		Scrub the event; return the size of `encode` (event), whether it has a ``\\ud`` escape, and the JSON
		sentry-sdk will send of it (`take_encoded`; None when sentry-sdk's encoder would not take it as it is).
		Breadcrumbs that consecutive events share (breadcrumbs.py serializes each once) are scrubbed and encoded
		once: id -> (breadcrumb, scrubbed breadcrumb, JSON, escapes, exact); the reference keeps the id from being
		reused.
		"""
		crumbs = event.get("breadcrumbs")
		values = crumbs.get("values") if type(crumbs) is dict and len(crumbs) == 1 else None
		many = type(values) is list and len(values) >= 8
		scrubber.scrub_event(event, breadcrumbs=not many)
		# sentry-sdk moves the trace's dynamic sampling context into the envelope header after before_send.
		# (The size measured is the payload's: the context travels in the envelope's header, not in it.)
		rest = event
		contexts = event.get("contexts")
		trace = contexts.get("trace") if type(contexts) is dict else None
		if type(trace) is dict and _DSC in trace:
			rest = dict(event)
			rest["contexts"] = dict(contexts)
			rest["contexts"]["trace"] = {k: v for k, v in trace.items() if k != _DSC}
		if not many:
			raw, exact = _encode_exact(rest)
			return len(raw), b"\\ud" in raw, raw if exact else None
		if rest is event:
			rest = dict(event)
		rest["breadcrumbs"] = _CRUMBS_TOKEN
		raw, exact = _encode_exact(rest)
		escapes = b"\\ud" in raw
		cache = self._crumbs
		# Most breadcrumbs were in the previous event: looked up at C speed, only the new ones handled one by one.
		ids = list(map(id, values))  # type: ignore[arg-type]
		knowns = list(map(cache.get, ids))
		for index in [i for i, (k, c) in enumerate(zip(knowns, values, strict=True)) if k is None or k[0] is not c]:  # type: ignore[arg-type]
			crumb = values[index]  # type: ignore[index]
			scrubbed = scrubber.scrub_breadcrumb(crumb)
			encoded, crumb_exact = _encode_exact(scrubbed)
			known = (crumb, scrubbed, encoded, b"\\ud" in encoded, crumb_exact)
			cache[id(crumb)] = knowns[index] = known
		if len(cache) > len(ids) + 32:
			# Only this event's breadcrumbs: those that left the scope are let go a few at a time (not hundreds
			# kept long enough to reach the garbage collector's oldest generation).
			self._crumbs = dict(zip(ids, knowns, strict=True))
		values[:] = map(_SECOND, knowns)  # type: ignore[index]
		escapes = escapes or any(map(_FOURTH, knowns))
		exact = exact and all(map(_FIFTH, knowns))
		crumbs_json = b'{"values":[' + b",".join(map(_THIRD, knowns)) + b"]}"
		size = len(raw) - len(_CRUMBS_TOKEN_JSON) + len(crumbs_json)
		at = raw.find(_CRUMBS_TOKEN_JSON)
		if not exact or at < 0 or raw.find(_CRUMBS_TOKEN_JSON, at + 1) >= 0:
			return size, escapes, None
		return size, escapes, raw[:at] + crumbs_json + raw[at + len(_CRUMBS_TOKEN_JSON) :]

	def process(self, event: dict[str, typing.Any]) -> dict[str, typing.Any]:
		scrubber = self.Scrubber or scrub.active()
		raw: bytes | None
		try:
			size, escapes, raw = self._scrub_and_measure(event, scrubber)
		except (TypeError, ValueError):  # not plain JSON data: rebuild it
			event = typing.cast(dict, bounded(event, max_depth=64, max_breadth=100000, max_nodes=10**7))
			scrubber.scrub_event(event)
			size, escapes, raw = None, True, None
		if escapes:  # a \\udXXX escape: maybe a lone surrogate
			event = typing.cast(dict, scrub.sanitize(event))
			size, raw = None, None
		fitted, trimmed = fit_event(event, self.MaxBytes, self.MaxCompressed, size)
		if trimmed:
			original = fitted.get("contexts", {}).get("asab_sentry", {}).get("original_size", 0)
			notices.say(
				"event trimmed",
				"An event of {} bytes was over Sentry's size limit ({} bytes, {} compressed); sent without: {}.".format(
					original, self.MaxBytes, self.MaxCompressed, ", ".join(trimmed)
				),
			)
		elif raw is not None and self.KeepEncoding:
			_keep_encoded(fitted, raw)
		return fitted


def _marshal(value: typing.Any) -> bytes:
	"""
	``value`` in marshal's format (version 2); its str, int and float subclasses (multidict's istr header names in
	asab.web's log lines, enums) as the plain values JSON has of them. Raises ValueError for other objects.
	"""
	try:
		return marshal.dumps(value, 2)
	except ValueError:
		return marshal.dumps(_plain(value), 2)


def _plain(value: typing.Any, depth: int = 0) -> typing.Any:
	kind = type(value)
	if kind is str or kind is int or kind is float or kind is bool or kind is bytes or value is None:
		return value  # (bytes: the packed breadcrumbs)
	if depth > 100:
		raise ValueError("too deep to pack")
	if kind is dict:
		return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
	if kind is list:
		return [_plain(v, depth + 1) for v in value]
	if kind is tuple:
		return tuple(_plain(v, depth + 1) for v in value)
	if isinstance(value, str):
		return str.__str__(value)
	if isinstance(value, int):
		return int.__int__(value)
	if isinstance(value, float):
		return float.__float__(value)
	raise ValueError("{} cannot be packed".format(notices._type_name(value)))


def fill_encoded(envelope: typing.Any) -> bool:
	"""
	Give every item of a sentry-sdk ``Envelope`` whose payload the final pass encoded (`take_encoded`) those
	bytes, so that serializing the envelope encodes nothing but its headers (a `Deferred` event is finished here,
	in the calling thread, and so is an error event without a kept encoding once events are deferred). True when
	every item's payload is bytes now.
	"""
	complete = True
	for item in envelope.items:
		payload = item.payload
		if payload.bytes is None:
			raw = take_encoded(payload.json) if payload.json is not None else None
			if type(raw) is Deferred:
				raw = finish(raw)
			elif (
				raw is None and item.type == "event" and type(payload.json) is dict and _active and _active[0]._deferred
			):
				# Maybe an event whose pass was left to the delivery process and whose packed form is gone (the bound
				# of the kept encodings let it go while another thread's events came): never sent as it came, its
				# pass is done here (again, for an event the pass did not encode: it changes nothing then).
				raw = _active[0]._finish(payload.json)
			if raw is None:
				complete = False
			else:
				payload.bytes = raw
	return complete


def _keep_encoded(event: dict[str, typing.Any], raw: bytes) -> None:
	contexts = event.get("contexts")
	trace = contexts.get("trace") if type(contexts) is dict else None
	thread = threading.get_ident()
	previous = _encoded.pop(thread, None)  # never taken: the thread's last event was not sent
	if previous is not None:
		_encoded_bytes[0] = max(0, _encoded_bytes[0] - len(previous[2]))
	if len(_encoded) >= _MAX_ENCODED or _encoded_bytes[0] + len(raw) > _MAX_ENCODED_BYTES:
		_encoded.clear()
		_encoded_bytes[0] = 0
	_encoded[thread] = (event, tuple(event.values()), raw, trace if type(trace) is dict and _DSC in trace else None)
	_encoded_bytes[0] += len(raw)


def _pop_encoded(event: typing.Any) -> tuple[dict, tuple, bytes, dict | None] | None:
	"""The kept encoding of ``event`` (looked for in the calling thread first), forgotten; None when none is kept."""
	thread = threading.get_ident()
	known = _encoded.get(thread)
	if known is None or known[0] is not event:
		# Handed over in another thread than the one that ran the final pass (not sentry-sdk's way, but allowed).
		for other, entry in list(_encoded.items()):
			if entry[0] is event:
				thread, known = other, entry
				break
		else:
			return None
	if _encoded.pop(thread, None) is not known:
		return None  # taken meanwhile by another thread
	_encoded_bytes[0] = max(0, _encoded_bytes[0] - len(known[2]))
	return known
