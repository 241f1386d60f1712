"""Secrets never leave: one test per place data enters an event (reproduction D13), and [sentry] scrub_keys."""

import asyncio
import json
import logging
import sys

import aiohttp
import pytest

L = logging.getLogger("tests.scrub")


def strings(data, skip=("pre_context", "context_line", "post_context")):
	"""Every string value in the event (not source lines), with its path."""
	if isinstance(data, dict):
		for key, value in data.items():
			if key not in skip:
				yield from strings(value, skip)
	elif isinstance(data, list):
		for value in data:
			yield from strings(value, skip)
	elif isinstance(data, str):
		yield data


def leaked(event, *secrets):
	return [s for s in secrets if any(s in value for value in strings(event))]


@pytest.fixture
def svc(sentry_capture):
	return sentry_capture.application().get_service("asab.SentryService")


def test_extra_nested_and_compound_keys(svc, sentry_capture):
	svc.capture_message(
		"extras",
		extras={
			"password": "S_EXTRA_PASSWORD",
			"db_password": "S_EXTRA_DB_PASSWORD",
			"config": {"database": {"password": "S_EXTRA_NESTED"}},
			"access_token": "S_EXTRA_ACCESS_TOKEN",
			"user": "bob",
		},
	)
	event = sentry_capture.find(message="extras")
	assert leaked(event, "S_EXTRA") == []
	assert event["extra"]["db_password"] == "[Filtered]" and event["extra"]["user"] == "bob"


def test_contexts(svc, sentry_capture):
	async def in_task():
		svc.set_context("db", {"host": "db1", "password": "S_CONTEXT_PASSWORD", "pool": {"api_key": "S_CONTEXT_KEY"}})

		svc.set_context("credentials", {"user": "S_CONTEXT_USER", "key": "S_CONTEXT_KEY2"})
		svc.capture_message("context")

	asyncio.run(in_task())
	event = sentry_capture.find(message="context")
	assert leaked(event, "S_CONTEXT") == [] and event["contexts"]["db"]["host"] == "db1"
	assert set(event["contexts"]["credentials"]) == {"user", "key"}, "a secret-named context keeps its keys"


def test_struct_data_and_breadcrumb_data(svc, sentry_capture):
	L.warning("crumb", struct_data={"api_token": "S_CRUMB_TOKEN", "nested": {"secret": "S_CRUMB_SECRET"}})
	L.error("struct_data", struct_data={"password": "S_SD_PASSWORD", "api_token": "S_SD_API_TOKEN", "n": 1})
	event = sentry_capture.find(message="struct_data")
	assert leaked(event, "S_SD_", "S_CRUMB_") == []
	assert event["extra"]["n"] == 1


def test_frame_locals_including_nested_dicts(svc, sentry_capture):
	def fail():
		password, api_token = "S_LOCAL_PASSWORD", "S_LOCAL_API_TOKEN"  # noqa: F841
		settings = {"password": "S_LOCAL_NESTED", "headers": {"Authorization": "S_LOCAL_AUTH"}}  # noqa: F841
		raise RuntimeError("locals")

	try:
		fail()
	except RuntimeError as e:
		svc.capture_exception(e)
	event = sentry_capture.find(exception_type="RuntimeError")
	assert leaked(event, "S_LOCAL_") == []
	frame = event["exception"]["values"][-1]["stacktrace"]["frames"][-1]
	assert frame["vars"]["password"] == "[Filtered]" and "settings" in frame["vars"]


def test_sys_argv(sentry_capture):
	sentry_capture.application()
	sys.argv[:] = ["my_service", "--db-password=ARGV_SECRET", "--token", "ARGV_TOKEN", "-c", "site.conf"]
	L.error("with argv")
	event = sentry_capture.find(message="with argv")
	assert leaked(event, "ARGV_") == []
	assert event["extra"]["sys.argv"] == [
		"my_service",
		"--db-password=[Filtered]",
		"--token",
		"[Filtered]",
		"-c",
		"site.conf",
	]


def test_sys_argv_key_value_arguments(sentry_capture):
	"""KEY=value arguments (make-style, or an env-style launcher) carried their secrets out unfiltered."""
	sentry_capture.application()
	sys.argv[:] = ["my_service", "DB_PASSWORD=ARGV_SECRET", "api_token=ARGV_TOKEN", "MODE=fast", "a=b.conf"]
	L.error("with key=value argv")
	event = sentry_capture.find(message="with key=value argv")
	assert leaked(event, "ARGV_") == []
	assert event["extra"]["sys.argv"] == [
		"my_service",
		"DB_PASSWORD=[Filtered]",
		"api_token=[Filtered]",
		"MODE=fast",
		"a=b.conf",
	]


def test_tags_and_user(svc, sentry_capture):
	svc.capture_message(
		"tagged", tags={"session": "S_TAG_SESSION", "region": "eu"}, user={"id": "7", "token": "S_USER"}
	)
	event = sentry_capture.find(message="tagged")
	assert leaked(event, "S_TAG_", "S_USER") == [] and event["tags"]["region"] == "eu"


def test_web_request_and_its_transaction(collector):
	"""A real asab.web server instrumented by asab_sentry.web: the error event and the transaction of a failing
	request (the transaction is built by asab_sentry.web, not by sentry-sdk: it goes through the same pass)."""
	import asab
	import asab.web

	import asab_sentry
	from helpers import configure, items, until

	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

	services = []

	async def handler(request):
		await request.read()
		services[0].set_context("login", {"password": "S_CTX_PASSWORD", "user": "bob"})
		raise RuntimeError("handler failed")

	class App(asab.Application):
		def __init__(self):
			super().__init__(args=[])
			self.SentryService = asab_sentry.SentryService(self)
			services.append(self.SentryService)
			self.add_module(asab.web.Module)
			self.Container = asab.web.WebContainer(
				self.get_service("asab.WebService"), "web", config={"listen": "127.0.0.1 0"}
			)
			self.Container.WebApp.router.add_post("/login", handler)

		async def main(self):
			try:
				await until(lambda: self.Container.Addresses, timeout=30)
				url = "http://127.0.0.1:{}/login?token=S_QS_TOKEN&page=2".format(self.Container.Addresses[0][1])
				async with aiohttp.ClientSession() as session:
					async with session.post(
						url,
						json={"password": "S_BODY_PASSWORD", "user": "bob"},
						headers={
							"Authorization": "Bearer S_HDR_AUTH",
							"Cookie": "session=S_HDR_COOKIE",
							"X-Api-Key": "S_HDR_KEY",
						},
					) as response:
						await response.read()
			finally:
				self.stop()

	App().run()
	arrived = [i["payload"] for i in items(collector, count=2)]
	event = [p for p in arrived if p.get("type") != "transaction"][0]
	transaction = [p for p in arrived if p.get("type") == "transaction"][0]
	assert "request" in event and "request" in transaction
	assert event["request"]["headers"]["Authorization"] == "[Filtered]"
	for payload in (event, transaction):
		assert leaked(payload, "S_QS_", "S_BODY_", "S_HDR_", "S_CTX_") == []
		assert "page=2" in payload["request"]["query_string"]


def test_scrub_keys_adds_terms(sentry_capture):
	sentry_capture.configure({"sentry": {"scrub_keys": "ssn, iban"}})
	svc = sentry_capture.application().get_service("asab.SentryService")
	svc.capture_message("custom", extras={"customer_ssn": "S_SSN", "IBAN": "S_IBAN", "name": "Bob"})
	event = sentry_capture.find(message="custom")
	assert leaked(event, "S_SSN", "S_IBAN") == [] and event["extra"]["name"] == "Bob"


def test_without_scrub_keys_custom_terms_are_sent(svc, sentry_capture):
	svc.capture_message("custom", extras={"customer_ssn": "123"})
	assert sentry_capture.find(message="custom")["extra"]["customer_ssn"] == "123"


def test_dsn_key_not_in_frame_locals(sentry_capture):
	key = "0123456789abcdef0123456789abcdef"
	sentry_capture.configure({"sentry": {"data_source_name": "https://{}@o1.ingest.sentry.io/42".format(key)}})
	svc = sentry_capture.application().get_service("asab.SentryService")

	def fail(settings):
		raise RuntimeError("with settings in a local")

	try:
		fail(svc.Settings)
	except RuntimeError as e:
		svc.capture_exception(e)
	event = sentry_capture.find(exception_type="RuntimeError")
	frame = event["exception"]["values"][-1]["stacktrace"]["frames"][-1]
	assert frame["function"] == "fail" and "***@o1.ingest.sentry.io" in frame["vars"]["settings"]
	assert key not in json.dumps(frame["vars"])
