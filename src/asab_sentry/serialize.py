"""
A faster path for sentry-sdk's event serializer, for the events it can prove it produces identically.

sentry-sdk turns every event into JSON-ready data with a general graph walk (databag limits, reprs, cycle
detection, ``_meta`` annotations) that costs several microseconds per node, on the calling thread: about two
thirds of a sampled transaction. Most events hold only plain data: dicts with string keys, lists, strings,
numbers, booleans, None, datetimes. For those, `serialize_event` builds the same output in one tight walk
and annotates the ``_meta`` of `AnnotatedValue` nodes as sentry-sdk does. At the first node it cannot vouch
for (another type, a string longer than ``max_value_length``, a databag over sentry-sdk's breadth or depth
limits, a non-finite float, a cycle, a repr processor registered with sentry-sdk) it hands the whole event to
sentry-sdk's serializer, so the result is always what sentry-sdk would produce.
"""

from __future__ import annotations

import collections.abc
import datetime
import typing

import sentry_sdk.consts
import sentry_sdk.serializer
import sentry_sdk.utils

_AnnotatedValue = sentry_sdk.utils.AnnotatedValue
_format_timestamp = sentry_sdk.utils.format_timestamp
_UTC = datetime.timezone.utc
_DATETIME = datetime.datetime


def format_timestamp(value: datetime.datetime) -> str:
	"""sentry-sdk's ``format_timestamp`` (RFC 3339 in UTC, microseconds), without its ``strftime`` for UTC times."""
	if value.tzinfo is _UTC and value.year >= 1000:
		return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
			value.year,
			value.month,
			value.day,
			value.hour,
			value.minute,
			value.second,
			value.microsecond,
		)
	return _format_timestamp(value)


_MAX_DEPTH = 64  # deeper than any event sentry-sdk builds: treated as a possible cycle
_DATABAG_ROOTS = frozenset(("extra", "breadcrumbs", "request"))


class _Unsupported(Exception):
	"""The event holds something only sentry-sdk's serializer handles."""


class _Walk:
	__slots__ = ("max_length", "short", "keep_request_bodies", "meta", "path", "breadth", "depth")

	def __init__(self, max_length: int | None, keep_request_bodies: bool):
		self.max_length = max_length
		# Strings of at most this many characters are never truncated (4 bytes per character at most).
		self.short = max_length // 4 if max_length is not None else float("inf")
		self.keep_request_bodies = keep_request_bodies
		self.meta: dict[str, typing.Any] = {}
		self.path: list[str] = []
		# Databag limits (sentry-sdk's MAX_DATABAG_BREADTH/DEPTH) read at each call: they are module settings.
		self.breadth = sentry_sdk.serializer.MAX_DATABAG_BREADTH
		self.depth = sentry_sdk.serializer.MAX_DATABAG_DEPTH

	def annotate(self, metadata: dict[str, typing.Any]) -> None:
		node = self.meta
		for segment in self.path:
			node = node.setdefault(segment, {})
		node.setdefault("", {}).update(metadata)

	def node(self, value: typing.Any, databag: int | None, level: int) -> typing.Any:
		"""``databag``: remaining depth inside a databag (None outside one)."""
		if level > _MAX_DEPTH:
			raise _Unsupported
		kind = type(value)
		if kind is _AnnotatedValue:
			self.annotate(value.metadata)
			value = value.value
			kind = type(value)
		if databag is not None and databag <= 0:
			raise _Unsupported  # sentry-sdk would cut it here
		if kind is str:
			max_length = self.max_length
			if max_length is not None and len(value) * 4 > max_length and self.too_long(value, max_length):
				if not (len(self.path) == 3 and self.path[0] == "spans" and self.path[2] == "description"):
					raise _Unsupported
			return value
		if kind is int or kind is bool or value is None:
			return value
		if kind is float:
			if value - value != 0.0:  # inf or nan: sentry-sdk writes their repr
				raise _Unsupported
			return value
		if kind is dict or (isinstance(value, dict) and getattr(kind, "__sentry_repr__", None) is None):
			if databag is not None and len(value) > self.breadth:
				raise _Unsupported
			out = {}
			path = self.path
			short = self.short
			# Only under these top-level keys do databags start (see child_databag_of).
			check = databag is None and level < 3 and (not path or path[0] in _DATABAG_ROOTS)
			for key, item in value.items():
				if type(key) is not str:
					raise _Unsupported
				child = databag - 1 if databag is not None else self.child_databag_of(key) if check else None
				leaf = type(item)
				# Plain leaves inline (most nodes are): the same checks as `node` makes; the path is only kept
				# for what may need it (annotations, the databag depth, the span description rule).
				if (child is None or child > 0) and (
					(leaf is str and len(item) <= short) or leaf is int or leaf is bool or item is None
				):
					out[key] = item
				elif leaf is _DATETIME and (child is None or child > 0):
					out[key] = format_timestamp(item)
				else:
					path.append(key)
					out[key] = self.node(item, child, level + 1)
					path.pop()
			return out
		if kind is list or kind is tuple:
			if databag is not None and len(value) > self.breadth:
				raise _Unsupported
			items = []
			path = self.path
			short = self.short
			check = databag is None and level < 3 and (not path or path[0] in _DATABAG_ROOTS)
			for index, item in enumerate(value):
				child = databag - 1 if databag is not None else self.child_databag_of(str(index)) if check else None
				leaf = type(item)
				if (child is None or child > 0) and (
					(leaf is str and len(item) <= short) or leaf is int or leaf is bool or item is None
				):
					items.append(item)
				else:
					path.append(str(index))
					items.append(self.node(item, child, level + 1))
					path.pop()
			return items
		if kind is datetime.datetime:
			return format_timestamp(value)
		# Subclasses (e.g. sentry-sdk's own ``TransactionSource(str, Enum)``): sentry-sdk keeps the object itself.
		if isinstance(value, (int, float)):
			if isinstance(value, float) and value - value != 0.0:
				raise _Unsupported
			return value
		# A type that renders itself for Sentry (e.g. `asab_sentry.limits.Bag`): its result as it is, like sentry-sdk.
		sentry_repr = getattr(kind, "__sentry_repr__", None)
		if callable(sentry_repr):
			return sentry_repr(value)
		if isinstance(value, str) and getattr(kind, "__sentry_repr__", None) is None:
			if self.max_length is not None and len(value) * 4 > self.max_length:
				raise _Unsupported
			return value
		raise _Unsupported

	@staticmethod
	def too_long(value: str, max_length: int) -> bool:
		"""sentry-sdk would truncate it (by UTF-8 bytes, or by characters when it cannot be encoded)."""
		if len(value) > max_length:
			return True
		try:
			return len(value.encode("utf-8")) > max_length
		except UnicodeError:
			return True

	def child_databag_of(self, key: str) -> int | None:
		"""Remaining depth of the child ``key`` of the node at ``self.path``, outside any databag so far."""
		path = self.path
		depth = len(path)
		top = path[0] if depth else key
		if top == "extra" and depth == 0:
			return self.depth
		if top == "breadcrumbs" and depth == 2 and path[1] == "values":
			return self.depth
		if top == "request" and depth == 1 and key == "data":
			if self.keep_request_bodies:
				raise _Unsupported
			return self.depth
		return None


def serialize_event(
	event: dict[str, typing.Any],
	max_value_length: int | None = None,
	max_request_body_size: str | None = None,
	custom_repr: typing.Any = None,
) -> dict[str, typing.Any] | None:
	"""
	The event serialized as ``sentry_sdk.serializer.serialize(event, ...)`` would, or None when this walk
	cannot vouch for the result (then call sentry-sdk's serializer). ``custom_repr`` only matters for objects
	this walk does not accept, so it changes nothing here.
	"""
	if type(event) is not dict or sentry_sdk.serializer.global_repr_processors:
		return None
	walk = _Walk(max_value_length, max_request_body_size == "always")
	try:
		out = walk.node(event, None, 0)
	except (_Unsupported, RecursionError):
		return None
	if walk.meta:
		out["_meta"] = walk.meta
	return out


# Frame local variables: ``serialize(dict(frame.f_locals), is_vars=True)`` in sentry-sdk's ``serialize_frame``.

_REPRED = frozenset((str, int, float, bool, type(None), bytes, datetime.datetime))


def _safe_repr(value: typing.Any) -> str:
	try:
		text = repr(value)
	except Exception:
		return "<broken repr>"
	limit = _VARS_LIMIT
	if limit is not None and (len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit):
		raise _Unsupported  # sentry-sdk cuts it (and annotates the cut): its walk decides
	return text


# The length at which sentry-sdk's serializer cuts a repr of frame variables when no max_value_length is given:
# sentry_sdk.consts.DEFAULT_MAX_VALUE_LENGTH: None (nothing is cut) in recent releases, 1024 in older ones (2.27).
_VARS_LIMIT: int | None = getattr(sentry_sdk.consts, "DEFAULT_MAX_VALUE_LENGTH", None)


def _vars_node(value: typing.Any, depth: int, breadth: int, ancestors: set[int]) -> typing.Any:
	kind = type(value)
	if kind is _AnnotatedValue:
		raise _Unsupported  # sentry-sdk unwraps it, at any depth
	if depth <= 0:
		return _safe_repr(value)
	if kind in _REPRED:
		return _safe_repr(value)
	if kind is dict or kind is list or kind is tuple:
		if id(value) in ancestors:
			raise _Unsupported  # sentry-sdk marks the cycle (and then forgets the ancestor): its walk decides
		ancestors.add(id(value))
		if kind is dict:
			out: typing.Any = {}
			for index, (key, item) in enumerate(value.items()):
				if index >= breadth:
					break
				if type(key) is not str:
					if type(key) is not int:
						raise _Unsupported
					key = str(key)
				out[key] = _vars_node(item, depth - 1, breadth, ancestors)
		else:
			out = []
			for index, item in enumerate(value):
				if index >= breadth:
					break
				out.append(_vars_node(item, depth - 1, breadth, ancestors))
		ancestors.discard(id(value))
		return out
	if getattr(kind, "__sentry_repr__", None) is not None:
		raise _Unsupported
	if isinstance(value, (collections.abc.Mapping, collections.abc.Set, collections.abc.Sequence)) or isinstance(
		value, tuple(getattr(sentry_sdk.serializer, "sequence_types", ()))
	):
		if not isinstance(value, (str, bytes, bytearray, memoryview)):
			raise _Unsupported  # walked by sentry-sdk as a mapping or sequence
	return _safe_repr(value)


def serialize_vars(local_vars: typing.Any) -> dict[str, typing.Any] | None:
	"""
	``sentry_sdk.serializer.serialize(local_vars, is_vars=True)`` (no ``max_value_length``, no ``custom_repr``:
	how ``serialize_frame`` calls it), or None when this walk cannot vouch for the result: every leaf as its
	``repr``, dicts, lists and tuples within sentry-sdk's databag depth and breadth. Anything else that is a
	mapping or a sequence, a cycle, an ``AnnotatedValue``, a type with ``__sentry_repr__`` or a registered repr
	processor: None.
	"""
	if type(local_vars) is not dict or sentry_sdk.serializer.global_repr_processors:
		return None
	try:
		return typing.cast(
			dict,
			_vars_node(
				local_vars,
				sentry_sdk.serializer.MAX_DATABAG_DEPTH,
				sentry_sdk.serializer.MAX_DATABAG_BREADTH,
				set(),
			),
		)
	except (_Unsupported, RecursionError):
		return None
