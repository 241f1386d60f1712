"""
Breadcrumbs of log records, cheap to keep and cheap to send.

A log call at the breadcrumbs level only puts a `LogBreadcrumb` (the record and its message, see the class) on the
isolation scope (asab's access log of an instrumented request: on the global scope); its dict is built when an
event first reads it. sentry-sdk serializes every pending
breadcrumb again for every event (about 7 of the 9 in 10 nodes its serializer walks with 100 breadcrumbs
pending); here each is serialized once, by sentry-sdk's own serializer with the client's options, and the
result is reused by the following events that carry it. The event content is the same; `tests/test_performance.py`
compares events made both ways.

How: `stash` (an event processor, the last step before sentry-sdk scrubs and serializes the event) takes the
breadcrumbs out of the event when all of them are `LogBreadcrumb`; `restore` (``before_send``, right after
serializing) puts their serialized form back, with the ``_meta`` annotations sentry-sdk would have written.
An event with any other breadcrumb (``sentry_sdk.add_breadcrumb``, the stdlib integration's HTTP breadcrumbs)
goes the ordinary way.
"""

from __future__ import annotations

import logging
import operator
import sys
import threading
import typing

import sentry_sdk

from . import _sdk

_STASH = "asab_sentry_breadcrumbs"
_SERIALIZED_FOR = operator.attrgetter("_serialized_for")
_VALUE = operator.attrgetter("_value")
_META = operator.attrgetter("_meta")

# Held while a breadcrumb is built or scrubbed and serialized (at event time, never while logging).
_building = threading.RLock()


def _alone() -> int:
	# What `sys.getrefcount` says of an object that one local variable holds (2 up to CPython 3.13; the count of
	# the argument may change between versions): measured here, the way the log handler asks. Without trace or
	# profile function meanwhile: one that reads the frame's variables (a debugger, a tracing tool) holds one
	# reference more, and a count measured so would let the handler reuse a breadcrumb one other thing still holds.
	trace, profile = sys.gettrace(), sys.getprofile()
	sys.settrace(None)
	sys.setprofile(None)
	try:
		return _measure_alone()
	finally:
		sys.setprofile(profile)
		sys.settrace(trace)


def _measure_alone() -> int:
	probe = LogBreadcrumb.__new__(LogBreadcrumb)
	return sys.getrefcount(probe)


class LogBreadcrumb(dict):
	"""
	A breadcrumb kept as its log record and built on first use.

	It behaves as the dict ``builder(record, message)`` returns; every read builds it first. The message is the
	text at the time of the log call (later changes to the arguments do not show): ``message`` formatted then, or
	None when the record's arguments are plain values (str, int, float, bool, None) and it is formatted, to the same
	text, on first read. ``extra`` data is referenced, as sentry-sdk's own breadcrumbs reference it.

	A breadcrumb stays in memory for the next ``max_breadcrumbs`` log records, long enough to reach the garbage
	collector's oldest generation: its serialized form is kept in slots rather than in one more container, so
	that each one adds as few objects as possible to what a full collection walks.
	"""

	__slots__ = ("_record", "_message", "_builder", "_serialized_for", "_value", "_meta")

	def __init__(
		self,
		record: logging.LogRecord,
		message: str | None,
		builder: typing.Callable[[logging.LogRecord, str], dict],
	):
		self._record: logging.LogRecord | None = record
		self._message = message
		self._builder = builder
		# The client options the breadcrumb was serialized with (None: not serialized), the result, its _meta.
		self._serialized_for: dict | None = None
		self._value: dict | None = None
		self._meta: dict | None = None

	def reuse(
		self,
		record: logging.LogRecord,
		message: str | None,
		builder: typing.Callable[[logging.LogRecord, str], dict],
	) -> None:
		"""
		Make this breadcrumb, which nothing else references any more (the caller checked), the one of ``record``:
		what a new ``LogBreadcrumb(record, message, builder)`` would be, without allocating one.
		"""
		self._record = record
		self._message = message
		self._builder = builder
		if self._serialized_for is not None or self._value is not None:
			self._serialized_for = self._value = self._meta = None
		if dict.__len__(self):
			dict.clear(self)

	def build(self) -> LogBreadcrumb:
		if self._record is not None:
			# Events are prepared in any thread: the dict is complete before anyone can see the record gone.
			with _building:
				record = self._record
				if record is not None:
					message = self._message
					if message is None:
						from .logging import formatted_message

						message = formatted_message(record, report=False)
					dict.update(self, self._builder(record, message))
					self._record = None
		return self

	def serialized(self, options: dict) -> tuple[dict, dict | None]:
		"""This breadcrumb scrubbed and serialized as sentry-sdk would in an event, and its ``_meta``; once."""
		if self._serialized_for is options:
			return typing.cast(dict, self._value), self._meta
		with _building:
			self.build()
			scrubber = options.get("event_scrubber")
			if scrubber:
				scrubber.scrub_breadcrumbs({"breadcrumbs": {"values": [self]}})
			value, meta = _sdk.serialize_breadcrumb(self, options)
			self._value, self._meta, self._serialized_for = value, meta, options
		return value, meta

	def _changed(self) -> None:
		self._serialized_for = self._value = self._meta = None

	def __getitem__(self, key):
		return dict.__getitem__(self.build(), key)

	def _change(self, method: typing.Callable, *args: typing.Any) -> typing.Any:
		# Under the lock `serialized` holds: a serialization running meanwhile (another thread's event) cannot
		# keep the form it made of the content before the change.
		with _building:
			try:
				return method(self.build(), *args)
			finally:
				self._changed()

	def __setitem__(self, key, value):
		self._change(dict.__setitem__, key, value)

	def __delitem__(self, key):
		self._change(dict.__delitem__, key)

	def __ior__(self, other):
		self._change(dict.update, other)
		return self

	def __or__(self, other):
		return dict(dict.items(self.build())) | other

	def __ror__(self, other):
		return other | dict(dict.items(self.build()))

	def __contains__(self, key):
		return dict.__contains__(self.build(), key)

	def __iter__(self):
		return dict.__iter__(self.build())

	def __len__(self):
		return dict.__len__(self.build())

	def __eq__(self, other):
		return dict.__eq__(self.build(), other)

	def __ne__(self, other):
		return dict.__ne__(self.build(), other)

	__hash__ = None  # type: ignore[assignment]

	def __repr__(self):
		return dict.__repr__(self.build())

	def __reduce__(self):
		return (dict, (dict(dict.items(self.build())),))

	def get(self, key, default=None):
		return dict.get(self.build(), key, default)

	def keys(self):
		return dict.keys(self.build())

	def values(self):
		return dict.values(self.build())

	def items(self):
		return dict.items(self.build())

	def copy(self):
		return dict(dict.items(self.build()))

	def pop(self, *args):
		return self._change(dict.pop, *args)

	def popitem(self):
		return self._change(dict.popitem)

	def setdefault(self, key, default=None):
		return self._change(dict.setdefault, key, default)

	def update(self, *args, **kwargs):
		self._change(dict.update, dict(*args, **kwargs))

	def clear(self):
		self._change(dict.clear)


#: Breadcrumbs the log handler no longer keeps are reused (`LogBreadcrumb.reuse`) when the reference count says that
#: nothing else holds them: in CPython with its global interpreter lock, where that count is exact for an object
#: no other thread can reach. Not in free-threaded builds (3.13t) or other implementations.
_REUSE = sys.implementation.name == "cpython" and getattr(sys, "_is_gil_enabled", lambda: True)()
_ALONE = _alone()


def stash(event: dict, hint: dict) -> dict:
	"""Event processor: take out the breadcrumbs when they are all `LogBreadcrumb` (see the module's doc)."""
	breadcrumbs = event.get("breadcrumbs")
	if type(breadcrumbs) is not dict or len(breadcrumbs) != 1:
		return event
	values = breadcrumbs.get("values")
	if type(values) is not list or not values:
		return event
	if set(map(type, values)) != {LogBreadcrumb}:
		return event
	del event["breadcrumbs"]
	hint[_STASH] = values
	return event


def restore(event: dict, hint: dict) -> dict:
	"""``before_send``: put back what `stash` took out, serialized, with the ``_meta`` sentry-sdk would write."""
	values = hint.pop(_STASH, None)
	if values is None:
		return event
	options = sentry_sdk.get_client().options
	# What `serialized` returns, looked up at C speed; only the breadcrumbs new to events are serialized here.
	for index in [i for i, done in enumerate(map(_SERIALIZED_FOR, values)) if done is not options]:
		values[index].serialized(options)
	serialized = list(map(_VALUE, values))
	metas = {str(i): m for i, m in enumerate(map(_META, values)) if m} if any(map(_META, values)) else {}
	if None in serialized:  # a breadcrumb changed by another thread meanwhile: each one as it is now
		pairs = [crumb.serialized(options) for crumb in values]
		serialized = [value for value, _ in pairs]
		metas = {str(i): meta for i, (_, meta) in enumerate(pairs) if meta}
	event["breadcrumbs"] = {"values": serialized}
	meta_root = event.get("_meta")
	own = meta_root.get("breadcrumbs") if isinstance(meta_root, dict) else None
	if own is not None:
		# sentry-sdk counted the breadcrumbs dropped for max_breadcrumbs plus those left in the event (none).
		length = own.get("", {}).get("len")
		if isinstance(length, int):
			own[""]["len"] = length + len(values)
		own.pop("values", None)
	if metas:
		if not isinstance(meta_root, dict):
			meta_root = event["_meta"] = {}
		meta_root.setdefault("breadcrumbs", {})["values"] = metas
	return event


_installed_on: typing.Any = None


def install() -> None:
	"""
	Register `stash` on the global scope, once: it runs after the processors of sentry-sdk's integrations and
	before those added to isolation or current scopes (which therefore see no breadcrumbs when all are
	`LogBreadcrumb`).
	"""
	global _installed_on
	scope = sentry_sdk.get_global_scope()
	if _installed_on is scope:
		return
	scope.add_event_processor(stash)
	_installed_on = scope
