"""Sentry's size limits (trim step by step, record it, minimal event), bounded data, every struct_data key."""

import json
import logging
import os
import time

import pytest

from asab_sentry import limits
from helpers import configure, payloads, run_app

L = logging.getLogger("tests.limits")


def big_event(crumbs=120, crumb_data=12_000, frames=0, local_size=0, extra_size=0):
	event = {
		"event_id": "a" * 32,
		"level": "error",
		"platform": "python",
		"timestamp": 1.0,
		"message": "the error",
		"tags": {"appclass": "App"},
		"contexts": {"trace": {"trace_id": "b" * 32, "span_id": "c" * 16}},
		"breadcrumbs": {
			"values": [
				{"message": "call {}".format(i), "data": {"body": ("q%03d " % i) * (crumb_data // 5)}}
				for i in range(crumbs)
			]
		},
	}
	if frames:
		event["exception"] = {
			"values": [
				{
					"type": "ValueError",
					"value": "bad",
					"stacktrace": {
						"frames": [
							{
								"function": "f{}".format(i),
								"lineno": i,
								"vars": {"blob": "v%04d " % i * (local_size // 6)},
								"pre_context": ["x = 1"] * 5,
							}
							for i in range(frames)
						]
					},
				}
			]
		}
	if extra_size:
		event["extra"] = {"big": "e" * extra_size, "small": 1}
	return event


def size(event):
	return len(limits.encode(event))


def test_an_event_within_the_limits_is_not_touched():
	event = big_event(crumbs=10, crumb_data=100)
	before = json.dumps(event)
	out, trimmed = limits.fit_event(event)
	assert trimmed == [] and json.dumps(out) == before


def test_breadcrumb_data_goes_first_oldest_first(referee):
	event = big_event()
	assert size(event) > limits.MAX_EVENT_BYTES
	out, trimmed = limits.fit_event(event)
	assert size(out) <= limits.MAX_EVENT_BYTES
	assert trimmed and trimmed[0].startswith("data of ") and len(trimmed) == 1
	values = out["breadcrumbs"]["values"]
	assert len(values) == 120, "no breadcrumb removed when dropping data was enough"
	assert "data" not in values[0] and "data" in values[-1], "the oldest lose their data first"
	assert out["contexts"]["asab_sentry"]["trimmed"] == trimmed
	assert out["contexts"]["asab_sentry"]["original_size"] > limits.MAX_EVENT_BYTES
	referee.check("event", limits.encode(out))
	assert not referee.problems


def test_then_oldest_breadcrumbs_then_locals_beyond_innermost_then_extra():
	event = big_event(crumbs=100, crumb_data=2000, frames=50, local_size=30_000, extra_size=500_000)
	out, trimmed = limits.fit_event(event)
	assert size(out) <= limits.MAX_EVENT_BYTES
	steps = " | ".join(trimmed)
	assert "breadcrumbs" in steps and "local variables" in steps
	frames = out["exception"]["values"][0]["stacktrace"]["frames"]
	assert all("vars" in f for f in frames[-limits.INNERMOST_FRAMES_WITH_LOCALS :]), "innermost frames keep locals"
	assert "vars" not in frames[0]
	assert out["message"] == "the error" and out["contexts"]["trace"]["trace_id"] == "b" * 32


def test_compressed_limit():
	# Incompressible data under 1 MB but well over 200 KB compressed.
	event = big_event(crumbs=0)
	event["extra"] = {"noise{}".format(i): os.urandom(3000).hex() for i in range(100)}
	assert size(event) < limits.MAX_EVENT_BYTES
	out, trimmed = limits.fit_event(event)
	import zlib

	assert len(zlib.compress(limits.encode(out), 9)) <= limits.MAX_COMPRESSED_BYTES
	assert trimmed and "extra values" in trimmed[-1]
	assert set(out["extra"]) == set(event["extra"]), "every key kept, big values replaced by a note"


def test_minimal_event_when_nothing_else_helps(referee):
	event = big_event(crumbs=0, frames=3)
	event["fingerprint"] = ["x"]
	# Many small exceptions values nothing trims: only the minimal event fits.
	event["exception"]["values"] = [
		{"type": "E{}".format(i), "value": "v" * 2000, "stacktrace": {"frames": [{"function": "f", "lineno": 1}] * 60}}
		for i in range(400)
	]
	out, trimmed = limits.fit_event(event)
	assert trimmed[-1].endswith("(minimal event)")
	assert size(out) <= limits.MAX_EVENT_BYTES
	assert out["exception"]["values"][-1]["type"] == "E399"
	assert len(out["exception"]["values"][-1]["stacktrace"]["frames"]) == limits.MINIMAL_EVENT_FRAMES
	assert out["event_id"] == "a" * 32 and out["fingerprint"] == ["x"]
	referee.check("event", limits.encode(out))
	assert not referee.problems


def test_oversized_error_arrives_trimmed_with_one_line(collector, caplog):
	"""Reproduction 07: 120 INFO records with 12 kB struct_data each, then an error (1.2 MB); the collector
	enforces Sentry's 1 MB."""
	collector.Collector.Settings.max_decompressed_size = 1_048_576
	configure({"sentry": {"data_source_name": collector.dsn}, "sentry:logging": {"breadcrumbs": "info"}})

	async def body(app):
		logging.getLogger().setLevel(logging.INFO)
		for i in range(120):
			L.info(
				"Upstream call done",
				struct_data={"call": i, "request_body": ("q%03d " % i) * 1200, "response_body": ("r%03d " % i) * 1200},
			)
		L.error("Upstream answered garbage")

	with caplog.at_level(logging.WARNING, logger="asab_sentry"):
		run_app(body)
	(event,) = payloads(collector)
	assert event["logentry"]["formatted"] == "Upstream answered garbage"
	assert event["contexts"]["asab_sentry"]["original_size"] > 1_000_000
	assert len(json.dumps(event)) < 1_000_000
	lines = [r.getMessage() for r in caplog.records if "over Sentry's size limit" in r.getMessage()]
	assert len(lines) == 1 and "sent without: data of" in lines[0]


# Bounded data


def test_bounded_limits_depth_breadth_nodes_and_length():
	deep = current = {}
	for _ in range(150):
		current["n"] = {}
		current = current["n"]
	out = limits.bounded(deep)
	depth = 0
	while isinstance(out, dict):
		out = out["n"]
		depth += 1
	assert depth == limits.MAX_DEPTH and isinstance(out, str)

	wide = limits.bounded({str(i): i for i in range(5000)})
	assert len(wide) == limits.MAX_BREADTH + 1 and wide["..."] == "4000 more keys"
	assert limits.bounded(["x" * 100], max_length=10) == ["xxxxxxx..."]
	huge = limits.bounded([list(range(1000)) for _ in range(100)])
	assert sum(len(x) for x in huge if isinstance(x, list)) <= limits.MAX_NODES + 100


def test_bounded_never_raises():
	class Broken:
		def __repr__(self):
			raise RuntimeError("no")

	class BadMapping(dict):
		def items(self):
			raise RuntimeError("items boom")

	cyclic: dict = {}
	cyclic["self"] = cyclic
	out = limits.bounded(
		{
			"broken": Broken(),
			"huge": 10**5000,
			"nan": float("nan"),
			"bytes": b"\xff\xfe",
			"surrogate": "a\udcff",
			"cyclic": cyclic,
			5: "int key",
		}
	)
	assert out["broken"] == "<Broken object with a broken repr>"
	assert out["huge"].startswith("<int of") and out["nan"] == "nan" and out["surrogate"] == "a\ufffd"
	assert out["cyclic"] == {"self": "<cyclic>"} and out["5"] == "int key"
	json.dumps(out, ensure_ascii=False).encode("utf-8")
	assert isinstance(limits.bounded(BadMapping(a=1)), str)


def test_set_context_is_bounded_at_once(sentry_capture):
	"""Reproduction D05: a context 150 levels deep or with a million keys."""
	svc = sentry_capture.application().get_service("asab.SentryService")
	deep = current = {}
	for _ in range(150):
		current["n"] = {}
		current = current["n"]
	svc.set_context("deep", deep)
	svc.set_context("big", {str(i): i for i in range(1_000_000)})
	started = time.monotonic()
	svc.capture_message("clean message after big contexts")
	event = sentry_capture.find(message="clean message after big contexts")
	assert len(event["contexts"]["big"]) == limits.MAX_BREADTH + 1
	assert len(json.dumps(event)) < 200_000
	assert time.monotonic() - started < 30, "sanity bound only; the capture no longer serializes a million keys"


@pytest.mark.parametrize("keys", [11, 15, 40])
def test_struct_data_keeps_every_key(sentry_capture, keys):
	sentry_capture.configure({"sentry:logging": {"breadcrumbs": "warning"}})
	sentry_capture.application()
	data = {"key{}".format(i): i for i in range(keys)}
	L.warning("crumb with many keys", struct_data=data)
	L.error("event with many keys", struct_data=data)
	event = sentry_capture.find(message="event with many keys")
	assert all(event["extra"]["key{}".format(i)] == i for i in range(keys))
	crumb = [c for c in event["breadcrumbs"]["values"] if c["message"] == "crumb with many keys"][0]
	assert crumb["data"] == data
