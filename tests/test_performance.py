"""
What the speed work must not change, and the start-up and internal-logger behaviour it relies on.
(Speed itself is measured in benchmarks/, never asserted here.)
"""

import asyncio
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import sentry_sdk
import sentry_sdk.utils

from asab_sentry import speed, testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

START_WITHOUT_WEB = """
import json, sys
import asab
import asab_sentry
asab.Config.read_dict({"sentry": {"data_source_name": "http://key@127.0.0.1:9/1"}})
app = asab.Application(args=[])
asab_sentry.SentryService(app)
import sentry_sdk
print(json.dumps({"aiohttp": "aiohttp" in sys.modules, "integrations": sorted(sentry_sdk.get_client().integrations)}))
"""


def run_python(code: str) -> dict:
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	out = subprocess.run(
		[sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=True
	)
	return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_service_without_asab_web_does_not_import_aiohttp():
	result = run_python(START_WITHOUT_WEB)
	assert result["aiohttp"] is False
	assert "aiohttp" not in result["integrations"]


def test_a_service_with_asab_web_gets_the_web_instrumentation_not_the_stock_integration():
	code = START_WITHOUT_WEB.replace("import asab\n", "import asab\nimport asab.web\n", 1)
	code = code.replace("asab_sentry.SentryService(app)", "svc = asab_sentry.SentryService(app)")
	code = code.replace('"integrations":', '"web": svc.Web is not None, "integrations":')
	result = run_python(code)
	assert result["aiohttp"] is True
	assert result["web"] is True, "asab_sentry.web instruments asab.web"
	assert "aiohttp" not in result["integrations"], "sentry-sdk's AioHttpIntegration stays off"


def test_sentry_sdk_internal_debug_logging_is_quiet_unless_debug(sentry_capture):
	sentry_capture.application()
	assert sentry_sdk.utils.logger.getEffectiveLevel() == logging.WARNING


def test_sentry_sdk_internal_debug_logging_with_debug_on(sentry_capture):
	sentry_capture.configure({"sentry": {"debug": "true"}})
	sentry_capture.application()
	assert sentry_sdk.utils.logger.getEffectiveLevel() == logging.DEBUG


# Event equivalence: the same scenario with the optimisations on and off must send the same events.

L = logging.getLogger("tests.performance")


def innermost(table, depth):
	row = {"id": depth, "password": "hunter2"}  # noqa: F841 (a local variable sentry-sdk scrubs)
	raise KeyError("missing {}".format(table))


def middle(table):
	attempts = [1, 2, 3]  # noqa: F841
	innermost(table, len(table))


def outer():
	table = "users"
	middle(table)


def scenario(svc):
	"""Every kind of content an event carries, with more breadcrumbs pending than sentry-sdk keeps."""
	svc.set_tag("customer", "acme")
	svc.set_context("import", {"file": "a.csv", "rows": 1200})
	for n in range(120):
		L.info("user %s logged in", "alice{}".format(n), extra={"attempt": n})
	L.log(25, "notice with struct_data", struct_data={"key": "value", "password": "secret"})
	L.warning({"not": "a string"})
	L.info("wide data", extra={"k{}".format(i): i for i in range(14)})
	L.info("x" * 300)
	# asab.web's access log (asab_sentry.web builds its breadcrumb), a request that failed and one that did not.
	access_log = logging.getLogger("asab.web.al")
	access_log.info("", struct_data={"al.m": "GET", "al.p": "/users/7", "al.c": 200, "D": 0.012})
	access_log.info("", struct_data={"al.m": "POST", "al.p": "/orders", "al.c": 503})
	L.info("nested", extra={"deep": {"a": {"b": {"c": {"d": {"e": {"f": "g"}}}}}}, "token": "t0ken"})
	try:
		outer()
	except KeyError as e:
		svc.capture_exception(e, tags={"per_event": "yes"})
	svc.capture_message("after the exception", level="warning")
	try:
		outer()
	except KeyError:
		L.exception("logged with exc_info")
	L.error("an error log with %d args", 1, extra={"request_id": "r-1"})

	async def in_task():
		svc.set_tag("task", "one")
		L.info("inside the task")
		svc.capture_message("from a task")

	asyncio.run(in_task())
	with svc.transaction("task", "scenario job"):
		with svc.span("db", "load rows"):
			sentry_sdk.get_current_span().set_data("rows", 1200)
		with svc.span("db", "d" * 300):  # longer than max_value_length: sentry-sdk keeps span descriptions whole
			pass
	sentry_sdk.add_breadcrumb(category="manual", message="not a log record")  # now the breadcrumbs are mixed
	L.info("after the manual breadcrumb")
	svc.capture_message("with mixed breadcrumbs")


CONFIG = {"sentry": {"max_value_length": "256", "traces_sample_rate": "1.0"}, "sentry:logging": {"breadcrumbs": "info"}}


def events_of_scenario(optimised: bool, config: dict = CONFIG) -> list[dict]:
	previous = speed.ENABLED
	speed.ENABLED = optimised
	try:
		with testing.capture_sentry(config) as capture:
			app = capture.application()
			logging.getLogger().setLevel(logging.INFO)
			scenario(app.get_service("asab.SentryService"))
			return [normalised(event) for event in capture.events + capture.transactions]
	finally:
		speed.ENABLED = previous


def normalised(event: dict) -> dict:
	"""The event without what differs between any two runs: ids, times, memory addresses in reprs."""
	event = json.loads(re.sub(r" at 0x[0-9a-f]+", " at 0x...", json.dumps(event)))
	for key in ("event_id", "timestamp", "start_timestamp"):
		event.pop(key, None)
	for span in event.get("spans", []):
		for key in ("span_id", "parent_span_id", "trace_id", "timestamp", "start_timestamp"):
			span[key] = "<{}>".format(key)
	crumbs = event.get("breadcrumbs") or {}
	# The protocol allows a list or {"values": [...]}; sentry-sdk 2.27 sends transactions an empty list.
	for crumb in crumbs.get("values", []) if isinstance(crumbs, dict) else crumbs:
		crumb["timestamp"] = "<time>"
	trace = event.get("contexts", {}).get("trace", {})
	for key in ("trace_id", "span_id", "parent_span_id"):
		if key in trace:
			trace[key] = "<id>"
	return event


# send_default_pii: another event scrubber (keeps IP addresses), which the one-time breadcrumb scrubbing must use.
PII = {**CONFIG, "sentry": {**CONFIG["sentry"], "send_default_pii": "true"}}


@pytest.mark.parametrize("config", [CONFIG, PII], ids=["defaults", "send_default_pii"])
def test_optimisations_keep_every_event_identical(config):
	fast = events_of_scenario(optimised=True, config=config)
	plain = events_of_scenario(optimised=False, config=config)
	assert len(fast) == len(plain) == 7
	for a, b in zip(fast, plain, strict=True):
		assert a == b
	# The scenario covers what it means to: trimmed and scrubbed breadcrumbs, dropped ones counted, locals.
	assert fast[-1]["type"] == "transaction" and len(fast[-1]["spans"]) == 2
	first = fast[0]
	assert first["_meta"]["breadcrumbs"][""]["len"] > 100
	assert first["_meta"]["breadcrumbs"]["values"]
	# 100 of the request's isolation scope, and the 2 of asab's access log from the global scope (merged by sentry-sdk).
	assert len(first["breadcrumbs"]["values"]) == 102
	assert any(c.get("data", {}).get("password") == "[Filtered]" for c in first["breadcrumbs"]["values"])
	assert any(c["category"] == "asab.web.al" and c["type"] == "http" for c in first["breadcrumbs"]["values"])
	frames = first["exception"]["values"][0]["stacktrace"]["frames"]
	assert [f["function"] for f in frames[-3:]] == ["outer", "middle", "innermost"]
	assert frames[-1]["vars"]["row"] and frames[-1]["context_line"]
	assert first["contexts"]["import"] == {"file": "a.csv", "rows": 1200}
	assert first["tags"]["per_event"] == "yes"
	assert fast[-2]["breadcrumbs"]["values"][-2]["category"] == "manual"


def test_breadcrumbs_are_serialized_once_per_record(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)
	L.info("pending", extra={"payload": Counting()})
	svc.capture_message("first")
	svc.capture_message("second")
	first, second = sentry_capture.events
	assert first["breadcrumbs"] == second["breadcrumbs"]
	assert Counting.calls == 1


class Counting:
	calls = 0

	def __repr__(self):
		Counting.calls += 1
		return "<counting>"


def test_breadcrumbs_shared_by_events_of_several_threads_are_complete_and_scrubbed(sentry_capture):
	"""Events prepared at once in several threads build the same pending breadcrumbs only once, completely."""
	import sys
	import threading

	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)
	previous = sys.getswitchinterval()
	sys.setswitchinterval(1e-6)  # switch threads as often as possible
	try:
		for round_ in range(5):
			for n in range(100):
				L.info("pending %d", n, extra={"password": "secret", "n": n})
			start = threading.Barrier(4)

			def send(name, start):
				start.wait()
				svc.capture_message(name)

			threads = [threading.Thread(target=send, args=("r{}t{}".format(round_, t), start)) for t in range(4)]
			for thread in threads:
				thread.start()
			for thread in threads:
				thread.join()
	finally:
		sys.setswitchinterval(previous)
	assert len(sentry_capture.events) == 20
	for event in sentry_capture.events:
		crumbs = event["breadcrumbs"]["values"]
		assert len(crumbs) == 100
		for crumb in crumbs:
			assert crumb["message"].startswith("pending ") and crumb["type"] == "log"
			assert crumb["data"]["password"] == "[Filtered]"


# Encoded once: the final pass's JSON of an event is what goes on the wire (asab_sentry.limits.take_encoded).


class Checking(sentry_sdk.transport.Transport):
	"""In front of the capture's transport: each payload must be exactly sentry-sdk's own encoding of it."""

	def __init__(self, inner):
		super().__init__()
		self.Inner = inner
		self.Payloads = 0
		self.Reused = 0

	def capture_envelope(self, envelope):
		from asab_sentry import limits

		expected = [sentry_sdk.utils.json_dumps(item.payload.json) for item in envelope.items]
		reused = limits.fill_encoded(envelope)
		assert [item.payload.get_bytes() for item in envelope.items] == expected
		self.Payloads += len(expected)
		self.Reused += len(expected) if reused else 0
		self.Inner.capture_envelope(envelope)


def test_every_event_is_sent_as_the_final_pass_encoded_it_byte_for_byte():
	with testing.capture_sentry(CONFIG) as capture:
		app = capture.application()
		client = sentry_sdk.get_client()
		checking = client.transport = Checking(client.transport)
		logging.getLogger().setLevel(logging.INFO)
		scenario(app.get_service("asab.SentryService"))
		assert len(capture.events) + len(capture.transactions) == 7
	# Errors (with 100, with fewer than 8 and with mixed breadcrumbs) and the transaction: none encoded twice.
	assert checking.Payloads == checking.Reused == 7


def test_an_encoding_is_not_used_when_the_event_changed_after_the_final_pass():
	from asab_sentry import limits

	def fresh():
		return {
			"event_id": "e" * 32,
			"level": "error",
			"contexts": {"trace": {"trace_id": "t" * 32, "dynamic_sampling_context": {"trace_id": "t" * 32}}},
			"breadcrumbs": {"values": [{"message": "m{}".format(n), "password": "x"} for n in range(10)]},
		}

	final_pass = limits.FinalPass(keep_encoding=True)
	# As sentry-sdk leaves it: the dynamic sampling context moved to the envelope's header.
	event = final_pass(fresh(), {})
	event["contexts"]["trace"].pop("dynamic_sampling_context")
	assert limits.take_encoded(event) == sentry_sdk.utils.json_dumps(event)
	assert limits.take_encoded(event) is None, "given once"
	# The context left in the event: the encoding (without it) is not used.
	event = final_pass(fresh(), {})
	assert limits.take_encoded(event) is None
	# A top-level value replaced (as sentry-sdk does when it splits gen_ai spans off), added or removed.
	for change in (
		lambda e: e.__setitem__("breadcrumbs", {"values": []}),
		lambda e: e.__setitem__("spans", []),
		lambda e: e.pop("level"),
	):
		event = final_pass(fresh(), {})
		event["contexts"]["trace"].pop("dynamic_sampling_context")
		change(event)
		assert limits.take_encoded(event) is None
	# Not for the switch turned off, nor for what sentry-sdk's encoder would refuse (NaN).
	event = limits.FinalPass()(fresh(), {})
	event["contexts"]["trace"].pop("dynamic_sampling_context")
	assert limits.take_encoded(event) is None
	event = fresh()
	event["extra"] = {"ratio": float("nan")}
	event = final_pass(event, {})
	event["contexts"]["trace"].pop("dynamic_sampling_context")
	assert limits.take_encoded(event) is None


def test_encodings_nobody_takes_are_bounded_in_bytes():
	"""Events sentry-sdk drops after before_send (sample_rate) never take their encoding: at most a few MB stay."""
	from asab_sentry import limits

	final_pass = limits.FinalPass(keep_encoding=True)
	kept = []
	for n in range(30):  # 30 events of ~600 kB, none taken (as if the error sampler dropped them all)
		kept.append(final_pass({"event_id": "{:032x}".format(n), "extra": {"blob": "x" * 600_000}}, {}))
	held = sum(len(entry[2]) for entry in limits._encoded.values())
	assert 0 < held <= limits._MAX_ENCODED_BYTES
	# Still given to the latest events, and once.
	latest = kept[-1]
	assert limits.take_encoded(latest) == sentry_sdk.utils.json_dumps(latest)
	assert limits.take_encoded(latest) is None


def events_of(optimised: bool, story, config: dict = CONFIG) -> list[dict]:
	previous = speed.ENABLED
	speed.ENABLED = optimised
	try:
		with testing.capture_sentry(config) as capture:
			app = capture.application()
			logging.getLogger().setLevel(logging.INFO)
			story(app.get_service("asab.SentryService"))
			return [normalised(event) for event in capture.events + capture.transactions]
	finally:
		speed.ENABLED = previous


def test_breadcrumbs_logged_out_of_time_order_are_ordered_as_sentry_sdk_orders_them():
	def story(svc):
		# Records whose creation times go back and forth, and two with the same time (the sort is stable).
		for n, created in enumerate(CREATED):
			record = logging.LogRecord("tests.order", logging.INFO, __file__, 1, "crumb %d", (n,), None)
			record.created = created
			logging.getLogger("tests.order").handle(record)
		svc.capture_message("first")
		L.info("later")
		svc.capture_message("second")

	fast = events_of(True, story)
	plain = events_of(False, story)
	assert fast == plain
	messages = [c["message"] for c in fast[0]["breadcrumbs"]["values"]]
	in_time_order = sorted(range(len(CREATED)), key=CREATED.__getitem__)  # stable, as sentry-sdk's sort
	assert messages == ["crumb {}".format(n) for n in in_time_order]
	assert in_time_order != sorted(in_time_order)


CREATED = [t + n // 7 for n, t in enumerate((1000.5, 1000.1, 1000.3, 1000.3, 999.0, 1000.2, 1000.1) * 3)]
