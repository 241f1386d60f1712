"""Lone surrogates wherever text enters an event (reproductions 18 and D01): events arrive, Relay accepts them,
and a bad string held in a scope does not poison the following events. Every event here is also checked by
Relay's normalizer (conftest)."""

import asyncio
import logging
import os

import pytest

from helpers import configure, payloads, run_app

L = logging.getLogger("tests.text")
NAME = os.fsdecode(b"report-\xe9t\xe9.csv")  # 'report-\udce9t\udce9.csv'
FIXED = "report-\ufffdt\ufffd.csv"


@pytest.fixture
def svc(sentry_capture):
	sentry_capture.configure({"sentry": {"traces_sample_rate": "1"}})
	return sentry_capture.application().get_service("asab.SentryService")


def relay_ok(referee, capture):
	assert capture.envelopes, "something was sent"
	assert referee.checked > 0 and referee.problems == []


def test_log_argument_template_and_struct_data(svc, sentry_capture, referee):
	assert "\udce9" in NAME
	L.error("Cannot open %s", NAME)
	L.error("Cannot open " + NAME)
	L.error("Upload rejected", struct_data={"file": NAME, NAME: "as a key"})
	assert sentry_capture.find(message="Cannot open " + FIXED)["logentry"]["params"] == [FIXED]
	assert len(sentry_capture.find_all(message="Cannot open " + FIXED)) == 2
	event = sentry_capture.find(message="Upload rejected")
	assert event["extra"]["file"] == FIXED and event["extra"][FIXED] == "as a key"
	relay_ok(referee, sentry_capture)


def test_capture_message_exception_text_and_locals(svc, sentry_capture, referee):
	svc.capture_message("checked " + NAME)
	try:
		path = "/uploads/" + NAME  # noqa: F841 (a local variable)
		raise ValueError("cannot import " + NAME)
	except ValueError as e:
		svc.capture_exception(e)
	assert sentry_capture.find(message="checked " + FIXED)
	event = sentry_capture.find(exception_type="ValueError")
	assert event["exception"]["values"][-1]["value"] == "cannot import " + FIXED
	relay_ok(referee, sentry_capture)


def test_bad_string_in_a_scope_does_not_poison_later_events(svc, sentry_capture, referee):
	async def in_task():
		L.warning("skipping file %s", NAME)  # a breadcrumb
		svc.set_tag("user_agent", "curl\udcff")
		svc.set_context("upload", {"file": NAME})
		with svc.transaction("task", "import " + NAME):
			pass
		svc.capture_message("clean message 1")
		svc.capture_message("clean message 2")

	asyncio.run(in_task())
	for text in ("clean message 1", "clean message 2"):
		event = sentry_capture.find(message=text)
		assert event["tags"]["user_agent"] == "curl\ufffd"
		assert event["contexts"]["upload"]["file"] == FIXED
		assert [c["message"] for c in event["breadcrumbs"]["values"]][-1] == "skipping file " + FIXED
	assert sentry_capture.find(type="transaction")["transaction"] == "import " + FIXED
	relay_ok(referee, sentry_capture)


def test_valid_surrogate_pair_becomes_its_character(svc, sentry_capture):
	svc.capture_message("smile \ud83d\ude00")
	assert sentry_capture.find(message="smile \U0001f600")


def test_environment_variables_are_repaired_and_named(collector, caplog):
	os.environ["NODE_ID"] = os.fsdecode(b"node-\xff")
	os.environ["SENTRY_ENVIRONMENT"] = os.fsdecode(b"prod-\xe9")
	os.environ["SENTRY_RELEASE"] = os.fsdecode(b"svc@1.0-\xe9")
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		app.SentryService.capture_message("after repaired variables")

	with caplog.at_level(logging.WARNING, logger="asab_sentry"):
		run_app(body)
	(event,) = payloads(collector)
	assert event["tags"]["node_id"] == "node-\ufffd"
	assert event["environment"] == "prod-\ufffd" and event["release"] == "svc@1.0-\ufffd"
	lines = [r.getMessage() for r in caplog.records if "is not valid UTF-8" in r.getMessage()]
	assert sorted(line.split()[2] for line in lines) == ["NODE_ID", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE"]


def test_web_request_header_with_byte_ff(collector, referee):
	"""Reproduction D01 (3): aiohttp decodes header bytes with surrogateescape; the failing request's event and
	its transaction (built by asab_sentry.web) are valid."""
	import asab.web

	import asab_sentry
	from helpers import items, until

	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

	async def handler(request):
		L.warning("unexpected client %s", request.headers.get("User-Agent"))
		raise RuntimeError("handler failed")

	class App(asab.Application):
		def __init__(self):
			super().__init__(args=[])
			self.SentryService = asab_sentry.SentryService(self)
			self.add_module(asab.web.Module)
			self.Container = asab.web.WebContainer(
				self.get_service("asab.WebService"), "web", config={"listen": "127.0.0.1 0"}
			)
			self.Container.WebApp.router.add_get("/", handler)

		async def main(self):
			try:
				await until(lambda: self.Container.Addresses, timeout=30)
				reader, writer = await asyncio.open_connection("127.0.0.1", self.Container.Addresses[0][1])
				writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\xff/8\r\nConnection: close\r\n\r\n")
				await writer.drain()
				await reader.read()
				writer.close()
			finally:
				self.stop()

	App().run()
	arrived = [i["payload"] for i in items(collector, count=2)]
	assert {p.get("type", "event") for p in arrived} == {"event", "transaction"}
	event = [p for p in arrived if p.get("type") != "transaction"][0]
	assert event["request"]["headers"]["User-Agent"] == "curl\ufffd/8"
	assert referee.problems == []
