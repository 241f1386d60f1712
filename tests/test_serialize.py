"""The fast serializer produces exactly what sentry-sdk's serializer produces, or steps aside."""

import copy
import datetime
import enum
import random

import sentry_sdk.serializer
import sentry_sdk.utils
from sentry_sdk.utils import AnnotatedValue

from asab_sentry.serialize import serialize_event


class Source(str, enum.Enum):
	CUSTOM = "custom"


class Number(enum.IntEnum):
	ONE = 1


class Described(str):
	def __sentry_repr__(self):
		return "described"


class Mapping(dict):
	pass


class RendersItself(dict):
	"""Like asab_sentry.limits.Bag: sentry-sdk takes what __sentry_repr__ returns, unwalked."""

	def __sentry_repr__(self):
		return {"rendered": len(self), "object": object}


LEAVES = [
	lambda r: "",
	lambda r: "short",
	lambda r: "ü" * r.randint(1, 60),  # 2 bytes per character: over the limit in bytes before in characters
	lambda r: "x" * r.randint(5, 90),
	lambda r: "\ud800 lone surrogate",
	lambda r: r.randint(-5, 5),
	lambda r: True,
	lambda r: None,
	lambda r: 1.5,
	lambda r: float("inf"),
	lambda r: float("nan"),
	lambda r: datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone.utc),
	lambda r: datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
	lambda r: b"bytes",
	lambda r: {1, 2},
	lambda r: object,
	lambda r: AnnotatedValue("[Filtered]", {"rem": [["!config", "s"]]}),
	lambda r: Source.CUSTOM,
	lambda r: Number.ONE,
	lambda r: Described("x"),
	lambda r: Mapping(a=1, b="two"),
	lambda r: RendersItself(a=1),
]


def value(r: random.Random, depth: int):
	if depth <= 0 or r.random() < 0.45:
		# Mostly plain leaves (the fast path), sometimes one only sentry-sdk's serializer handles.
		return r.choice(LEAVES if r.random() < 0.1 else LEAVES[:9] + LEAVES[11:13] + LEAVES[16:20] + LEAVES[20:])(r)
	shape = r.choice(("dict", "list", "tuple", "annotated"))
	# Wide nodes (over sentry-sdk's breadth of 10) only near the leaves, so that events stay small.
	width = r.choice((0, 1, 2, 11) if depth <= 2 else (0, 1, 2))
	if shape == "dict":
		return {"k{}".format(i): value(r, depth - 1) for i in range(width)}
	if shape == "annotated":
		return AnnotatedValue({"inner": value(r, depth - 1)}, {"len": 99})
	items = [value(r, depth - 1) for _ in range(width)]
	return items if shape == "list" else tuple(items)


def event(r: random.Random) -> dict:
	return {
		"level": "error",
		"extra": value(r, 7),
		"breadcrumbs": {"values": [{"message": value(r, 1), "data": value(r, 7)} for _ in range(r.randint(0, 3))]},
		"request": {"data": value(r, 7), "headers": value(r, 3)},
		"contexts": {"trace": {"op": value(r, 1)}, "deep": value(r, 9)},
		"spans": [{"description": value(r, 0), "data": value(r, 3)}],
		"tags": {"appclass": "App"},
		"timestamp": value(r, 0),
	}


def test_same_output_as_sentry_sdk_or_none():
	r = random.Random(1234)
	fast = 0
	for _ in range(3000):
		e = event(r)
		for max_value_length in (None, 40):
			ours = serialize_event(copy.copy(e), max_value_length=max_value_length)
			theirs = sentry_sdk.serializer.serialize(copy.copy(e), max_value_length=max_value_length)
			if ours is not None:
				fast += 1
				assert ours == theirs
	assert fast > 1000, fast  # the fast path is really taken for plain data


def test_plain_events_take_the_fast_path_with_meta_of_annotations():
	e = {
		"message": "hi",
		"extra": {"password": AnnotatedValue("[Filtered]", {"rem": [["!config", "s"]]})},
		"breadcrumbs": AnnotatedValue({"values": [{"message": "m", "data": {}}]}, {"len": 120}),
		"timestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
	}
	ours = serialize_event(e, max_value_length=1024)
	assert ours is not None
	assert ours == sentry_sdk.serializer.serialize(e, max_value_length=1024)
	assert ours["_meta"] == {
		"extra": {"password": {"": {"rem": [["!config", "s"]]}}},
		"breadcrumbs": {"": {"len": 120}},
	}


def test_keeps_long_span_descriptions_like_sentry_sdk():
	e = {"spans": [{"description": "d" * 100}]}
	assert serialize_event(e, max_value_length=10) == sentry_sdk.serializer.serialize(e, max_value_length=10)


def test_steps_aside_for_repr_processors():
	sentry_sdk.serializer.add_global_repr_processor(lambda value, hint: NotImplemented)
	try:
		assert serialize_event({"message": "hi"}) is None
	finally:
		sentry_sdk.serializer.global_repr_processors.pop()


def test_cycles_step_aside():
	a: dict = {}
	a["self"] = a
	assert serialize_event({"extra": {"a": [1]}, "contexts": {"c": a}}) is None


class BrokenRepr:
	def __repr__(self):
		raise RuntimeError("no repr")


VAR_LEAVES = [
	*LEAVES,
	lambda r: BrokenRepr(),
	lambda r: bytearray(b"ba"),
	lambda r: frozenset({3}),
	lambda r: {"x": 1}.keys(),
	lambda r: datetime.date(2026, 1, 2),
	lambda r: 10**30,
]


def local_variables(r: random.Random, depth: int):
	if depth <= 0 or r.random() < 0.4:
		# Mostly leaves the fast walk takes, sometimes one only sentry-sdk's serializer handles.
		return r.choice(VAR_LEAVES if r.random() < 0.03 else VAR_LEAVES[:16] + VAR_LEAVES[17:20] + VAR_LEAVES[22:])(r)
	width = r.choice((0, 1, 3, 12) if depth <= 2 else (0, 1, 3))
	shape = r.choice(("dict", "int keys", "list", "tuple"))
	if shape == "dict":
		return {"v{}".format(i): local_variables(r, depth - 1) for i in range(width)}
	if shape == "int keys":
		return {i: local_variables(r, depth - 1) for i in range(width)}
	items = [local_variables(r, depth - 1) for _ in range(width)]
	return items if shape == "list" else tuple(items)


def test_frame_variables_same_output_as_sentry_sdk_or_none():
	"""serialize_vars against ``serialize(..., is_vars=True)`` (how sentry-sdk's serialize_frame calls it)."""
	from asab_sentry.serialize import serialize_vars

	r = random.Random(4321)
	fast = 0
	for _ in range(3000):
		frame_locals = {"v{}".format(i): local_variables(r, 7) for i in range(r.randint(0, 14))}
		ours = serialize_vars(dict(frame_locals))
		theirs = sentry_sdk.serializer.serialize(dict(frame_locals), is_vars=True, custom_repr=None)
		if ours is not None:
			fast += 1
			assert ours == theirs
	assert fast > 1000, fast
	cyclic: list = [1]
	cyclic.append(cyclic)
	assert serialize_vars({"c": cyclic}) is None
	assert serialize_vars({"m": Mapping(a=1)}) is None and serialize_vars({"d": Described("x")}) is None


def test_timestamps_formatted_as_sentry_sdk_formats_them():
	from asab_sentry.serialize import format_timestamp

	r = random.Random(7)
	zones = [datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=-5)), None]
	for _ in range(3000):
		value = datetime.datetime(
			r.randint(1, 9999), r.randint(1, 12), r.randint(1, 28), r.randint(0, 23), r.randint(0, 59), r.randint(0, 59)
		)
		value = value.replace(microsecond=r.choice((0, 5, r.randint(0, 999_999))), tzinfo=r.choice(zones))
		try:
			expected = sentry_sdk.utils.format_timestamp(value)
		except (OverflowError, ValueError):  # outside the range after the conversion to UTC
			continue
		assert format_timestamp(value) == expected
	now = datetime.datetime.now(datetime.timezone.utc)
	assert format_timestamp(now) == sentry_sdk.utils.format_timestamp(now)
