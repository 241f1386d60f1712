"""Secrets never leave: one test per place data enters an event (reproduction D13), and [sentry] scrub_keys."""

import asyncio
import json
import logging
import sys

import aiohttp
import aiohttp.web
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
		svc.capture_message("context")

	asyncio.run(in_task())
	event = sentry_capture.find(message="context")
	assert leaked(event, "S_CONTEXT") == [] and event["contexts"]["db"]["host"] == "db1"


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


def test_tags_and_user(svc, sentry_capture):
	svc.capture_message(
		"tagged", tags={"session": "S_TAG_SESSION", "region": "eu"}, user={"id": "7", "token": "S_USER"}
	)
	event = sentry_capture.find(message="tagged")
	assert leaked(event, "S_TAG_", "S_USER") == [] and event["tags"]["region"] == "eu"


def test_request_headers_cookies_query_and_body(svc, sentry_capture):
	"""A real aiohttp server with sentry-sdk's aiohttp integration: what it reports of a failing request."""

	async def handler(request):
		await request.read()
		raise RuntimeError("handler failed")

	async def main():
		web = aiohttp.web.Application()
		web.router.add_post("/login", handler)
		runner = aiohttp.web.AppRunner(web)
		await runner.setup()
		site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
		await site.start()
		port = site._server.sockets[0].getsockname()[1]
		try:
			async with aiohttp.ClientSession() as session:
				async with session.post(
					"http://127.0.0.1:{}/login?token=S_QS_TOKEN&page=2".format(port),
					json={"password": "S_BODY_PASSWORD", "user": "bob"},
					headers={
						"Authorization": "Bearer S_HDR_AUTH",
						"Cookie": "session=S_HDR_COOKIE",
						"X-Api-Key": "S_HDR_KEY",
					},
				) as response:
					await response.read()
		finally:
			await runner.cleanup()

	asyncio.run(main())
	event = sentry_capture.wait(exception_type="RuntimeError")
	assert "request" in event, "the aiohttp integration reported the request"
	assert leaked(event, "S_QS_", "S_BODY_", "S_HDR_") == []
	assert "page=2" in event["request"]["query_string"]


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
