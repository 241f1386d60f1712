"""
asab.web instrumentation (asab_sentry.web): a real asab.web server on 127.0.0.1, real aiohttp requests, and what
arrived at the collector over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
import uuid

import aiohttp
import aiohttp.web
import asab
import asab.contextvars
import asab.exceptions
import asab.web
import asab.web.rest
import pytest
import sentry_sdk

import asab_sentry
from asab_sentry.web import PropagationTargets
from helpers import configure, payloads, until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class Server(asab.Application):
	"""An asab.web service on an ephemeral port of 127.0.0.1; ``Client(session, base_url, app)`` is its main()."""

	Routes: list = []
	Middlewares: list = []
	Client = None
	Extra = None  # called with the app in __init__, once its container exists

	def __init__(self):
		super().__init__(args=[])
		self.SentryService = asab_sentry.SentryService(self)
		self.add_module(asab.web.Module)
		self.Container = asab.web.WebContainer(
			self.get_service("asab.WebService"), "web", config={"listen": "127.0.0.1 0"}
		)
		if self.Extra is not None:
			self.Extra(self)
		for middleware in self.Middlewares:
			self.Container.WebApp.middlewares.append(middleware)
		for method, path, handler in self.Routes:
			self.Container.WebApp.router.add_route(method, path, handler)
		self.Result = None

	async def main(self):
		try:
			await until(lambda: self.Container.Addresses, timeout=30)
			base = "http://127.0.0.1:{}".format(self.Container.Addresses[0][1])
			async with aiohttp.ClientSession() as session:
				self.Result = await self.Client(session, base, self)
		finally:
			self.stop()


def serve(routes, client, middlewares=(), extra=None):
	class App(Server):
		Routes = list(routes)
		Middlewares = list(middlewares)
		Client = staticmethod(client)
		Extra = staticmethod(extra) if extra else None

	app = App()
	app.run()
	return app


async def ok(request):
	return aiohttp.web.Response(text="ok")


async def crash(request):
	raise RuntimeError("storage backend unavailable")


async def not_found(request):
	raise aiohttp.web.HTTPNotFound(text="no such invoice")


async def server_error(request):
	raise aiohttp.web.HTTPInternalServerError(text="storage backend unavailable")


async def key_error(request):
	raise KeyError("invoice 7")


async def validation_error(request):
	raise asab.exceptions.ValidationError("bad invoice")


async def unavailable(request):
	return aiohttp.web.Response(status=503, text="try later")


async def get_all(session, base, paths, headers=None):
	statuses = []
	for path in paths:
		async with session.get(base + path, headers=headers or {}) as response:
			await response.read()
			statuses.append(response.status)
	return statuses


def transactions(collector, count=1, timeout=5.0):
	return payloads(collector, type="transaction", count=count, timeout=timeout)


def trace(payload):
	return payload["contexts"]["trace"]


# -- Transactions ---------------------------------------------------------------------------------------------


def test_one_transaction_per_request_named_by_route(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	app = serve(
		[("GET", "/users/{id}", ok), ("POST", "/users/{id}", ok)],
		lambda s, base, app: get_all(s, base, ["/users/7", "/users/8?page=2", "/nowhere/1", "/nowhere/2"]),
	)
	assert app.Result == [200, 200, 404, 404]
	txns = transactions(collector, count=4)
	names = sorted(t["transaction"] for t in txns)
	assert names == ["GET (unmatched)", "GET (unmatched)", "GET /users/{id}", "GET /users/{id}"]
	for t in txns:
		assert trace(t)["op"] == "http.server"
		assert t["transaction_info"]["source"] in ("route", "custom")
		assert "/users/7" not in t["transaction"]
	by_status = {t["transaction"]: trace(t)["status"] for t in txns}
	assert by_status == {"GET /users/{id}": "ok", "GET (unmatched)": "not_found"}
	routed = [t for t in txns if t["transaction"] == "GET /users/{id}"]
	assert {t["request"]["url"] for t in routed} == {
		"http://127.0.0.1:{}/users/7".format(app.Container.Addresses[0][1]),
		"http://127.0.0.1:{}/users/8".format(app.Container.Addresses[0][1]),
	}
	assert len({trace(t)["trace_id"] for t in txns}) == 4, "each request starts its own trace"


def test_response_status_sets_transaction_status(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	serve(
		[("GET", "/missing", not_found), ("GET", "/crash", crash), ("GET", "/busy", unavailable)],
		lambda s, base, app: get_all(s, base, ["/missing", "/crash", "/busy"]),
	)
	txns = {t["transaction"]: t for t in transactions(collector, count=3)}
	assert trace(txns["GET /missing"])["status"] == "not_found"
	assert trace(txns["GET /crash"])["status"] == "internal_error"
	assert trace(txns["GET /busy"])["status"] == "unavailable"
	assert txns["GET /busy"]["contexts"]["response"]["status_code"] == 503


def test_rate_unset_sends_no_transaction_even_when_the_caller_sampled(collector):
	"""Case 14: the default rate (0) sends nothing, whatever the caller decided; events keep the caller's trace."""
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def logs_error(request):
		with asab_sentry.SentryService.transaction(request.app["app"].SentryService, "task", "render items"):
			pass
		request.app["app"].SentryService.capture_message("rendering is slow", level="warning")
		return aiohttp.web.Response(text="ok")

	headers = {"sentry-trace": "{}-{}-1".format(TRACE_ID, PARENT_SPAN)}
	app = serve([("GET", "/items", logs_error)], lambda s, base, app: get_all(s, base, ["/items"] * 3, headers))
	assert app.Result == [200, 200, 200]
	events = payloads(collector, type=None, count=3)
	assert [e.get("type", "event") for e in events] == ["event"] * 3, "no transaction at all"
	for event in events:
		assert trace(event)["trace_id"] == TRACE_ID
		assert trace(event)["parent_span_id"] == PARENT_SPAN
		assert event["transaction"] == "GET /items"


def test_error_events_carry_a_trace_id_with_tracing_off(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})
	serve([("GET", "/crash", crash)], lambda s, base, app: get_all(s, base, ["/crash", "/crash"]))
	events = payloads(collector, count=2)
	ids = {trace(e)["trace_id"] for e in events}
	assert len(ids) == 2 and all(len(i) == 32 for i in ids), "each request has its own trace"


def test_malformed_sentry_trace_starts_a_trace_of_its_own(collector):
	"""Only 32-16[-0|1] hex ids continue a trace; anything else (int(x, 16) accepted some) is ignored."""
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1.0"}})
	bad = [
		"4bf92f3577b34da6a3ce929d0e0e47_6-00f067aa0ba902b7-1",  # underscore: int(x, 16) takes it
		"4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba9_2b7-1",
		"4bf92f3577b34da6a3ce929d0e0e47 6-00f067aa0ba902b7-1",
		"{}-{}-1".format("0" * 32, PARENT_SPAN),  # all-zero ids are invalid
		"{}-{}-1".format(TRACE_ID[:-1] + "a", "0" * 16),
		"{}-{}-2".format(TRACE_ID[:-1] + "b", PARENT_SPAN),  # the flag is 0 or 1
		"{}-{}-1-x".format(TRACE_ID[:-1] + "c", PARENT_SPAN),
	]
	good = "{}-{}-1".format(TRACE_ID.upper(), PARENT_SPAN.upper())

	async def client(session, base, app):
		for value in bad + [good]:
			await get_all(session, base, ["/crash"], {"sentry-trace": value})

	serve([("GET", "/crash", crash)], client)
	events = payloads(collector, type=None, count=2 * (len(bad) + 1))
	ids = [trace(e)["trace_id"] for e in events]
	assert all(len(i) == 32 and int(i, 16) and i == i.lower() and "_" not in i for i in ids)
	continued = [e for e in events if trace(e)["trace_id"] == TRACE_ID]
	assert len(continued) == 2, "only the valid (upper-case) header continues the caller's trace"
	assert all(trace(e).get("parent_span_id") == PARENT_SPAN for e in continued)
	others = [e for e in events if trace(e)["trace_id"] != TRACE_ID]
	assert all(trace(e).get("parent_span_id") is None for e in others if e.get("type") == "transaction")


def test_ids_do_not_follow_the_applications_random_seed(collector):
	"""A service calling random.seed(n) (or tests under pytest-randomly) must not make requests repeat ids."""
	import random

	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1.0"}})

	async def seeded(request):
		random.seed(42)
		return aiohttp.web.Response(text="ok")

	serve([("GET", "/seeded", seeded)], lambda s, base, app: get_all(s, base, ["/seeded"] * 4))
	txns = transactions(collector, count=4)
	assert len({t["event_id"] for t in txns}) == 4
	assert len({trace(t)["trace_id"] for t in txns}) == 4
	assert len({trace(t)["span_id"] for t in txns}) == 4


def test_rate_above_zero_follows_the_callers_decision(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "0.000001"}})

	async def client(session, base, app):
		await get_all(session, base, ["/a"], {"sentry-trace": "{}-{}-1".format(TRACE_ID, PARENT_SPAN)})
		other = uuid.uuid4().hex
		await get_all(session, base, ["/a"], {"sentry-trace": "{}-{}-0".format(other, PARENT_SPAN)})
		await get_all(session, base, ["/a"] * 3)  # no decision: the rate decides (practically never)

	serve([("GET", "/a", ok)], client)
	(txn,) = transactions(collector, count=2, timeout=2.0)
	assert trace(txn)["trace_id"] == TRACE_ID and trace(txn)["parent_span_id"] == PARENT_SPAN


def test_caller_not_sampled_at_rate_one_sends_nothing(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	headers = {"sentry-trace": "{}-{}-0".format(TRACE_ID, PARENT_SPAN)}
	serve([("GET", "/a", ok)], lambda s, base, app: get_all(s, base, ["/a"], headers))
	assert transactions(collector, count=1, timeout=1.0) == []


# -- Errors ---------------------------------------------------------------------------------------------------


def test_handler_exception_gives_one_event_with_scrubbed_request_and_a_failed_transaction(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	headers = {
		"Authorization": "Bearer eyJsecret",
		"Cookie": "session=abc123",
		"X-Api-Key": "k-123",
		"X-Forwarded-For": "203.0.113.9",
		"Accept": "application/json",
	}
	app = serve(
		[("GET", "/orders/{id}", crash)],
		lambda s, base, app: get_all(s, base, ["/orders/42?page=3&access_token=t0ken"], headers),
	)
	assert app.Result == [500]
	(event,) = payloads(collector, count=1)
	(exc,) = event["exception"]["values"]
	assert exc["type"] == "RuntimeError" and exc["mechanism"]["handled"] is False
	assert event["transaction"] == "GET /orders/{id}"
	request = event["request"]
	assert request["method"] == "GET"
	assert request["url"].endswith("/orders/42")
	assert request["query_string"] == "page=3&access_token=[Filtered]"
	sent = {k.lower(): v for k, v in request["headers"].items()}
	assert sent["accept"] == "application/json"
	for secret in ("authorization", "cookie", "x-api-key", "x-forwarded-for"):
		assert sent[secret] == "[Filtered]", secret
	assert "eyJsecret" not in json.dumps(event) and "t0ken" not in json.dumps(event)
	(txn,) = transactions(collector)
	assert trace(txn)["status"] == "internal_error"
	assert trace(txn)["trace_id"] == trace(event)["trace_id"]


def test_json_exception_middleware_one_structured_event_and_4xx_translations_quiet(collector):
	"""Case 12, JSON mode: no text event from the middleware's log line; KeyError/ValidationError → no event."""
	configure({"sentry": {"data_source_name": collector.dsn}})
	paths = ["/crash", "/broken", "/missing", "/key", "/invalid"]
	app = serve(
		[
			("GET", "/crash", crash),
			("GET", "/broken", server_error),
			("GET", "/missing", not_found),
			("GET", "/key", key_error),
			("GET", "/invalid", validation_error),
		],
		lambda s, base, app: get_all(s, base, paths),
		middlewares=[asab.web.rest.JsonExceptionMiddleware],
	)
	assert app.Result == [500, 500, 404, 404, 400]
	events = payloads(collector, count=3, timeout=3.0)
	assert sorted(e["transaction"] for e in events) == ["GET /broken", "GET /crash"]
	for event in events:
		assert "logentry" not in event, "no text event from the middleware's log record"
		assert event["exception"]["values"][-1]["stacktrace"]["frames"]
	types = sorted(e["exception"]["values"][-1]["type"] for e in events)
	assert types == ["HTTPInternalServerError", "RuntimeError"]


def test_failed_status_codes_decide_which_responses_are_errors(collector):
	configure(
		{
			"sentry": {"data_source_name": collector.dsn},
			"sentry:web": {"failed_status_codes": "404, 503"},
		}
	)
	paths = ["/key", "/missing", "/busy", "/crash", "/fine"]
	serve(
		[
			("GET", "/key", key_error),
			("GET", "/missing", not_found),
			("GET", "/busy", unavailable),
			("GET", "/crash", crash),
			("GET", "/fine", ok),
		],
		lambda s, base, app: get_all(s, base, paths),
		middlewares=[asab.web.rest.JsonExceptionMiddleware],
	)
	events = {e["transaction"]: e for e in payloads(collector, count=3, timeout=3.0)}
	assert sorted(events) == ["GET /busy", "GET /key", "GET /missing"], "500 is not in the list any more"
	assert events["GET /key"]["exception"]["values"][-1]["type"] == "KeyError"
	assert events["GET /missing"]["exception"]["values"][-1]["type"] == "HTTPNotFound"
	assert events["GET /busy"]["logentry"]["formatted"] == "GET /busy responded with status 503"


def test_requests_aiohttp_cannot_parse_give_no_error_event(collector):
	"""A header over aiohttp's limit is answered 400 and logged at ERROR by aiohttp.server: no event (any client
	could make them at will); a later crash of the same service still gives its one event."""
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def client(session, base, app):
		statuses = []
		for _ in range(3):
			async with session.get(base + "/fine", headers={"x-big": "y" * 9000}) as response:
				statuses.append(response.status)
		return statuses + await get_all(session, base, ["/crash"])

	app = serve([("GET", "/fine", ok), ("GET", "/crash", crash)], client)
	assert app.Result == [400, 400, 400, 500]
	events = payloads(collector, count=2, timeout=3.0)
	assert [e["exception"]["values"][-1]["type"] for e in events] == ["RuntimeError"]


def test_events_of_a_request_carry_its_own_scope_and_only_its_own(collector):
	"""
	The event of a returned failed status, as those of exceptions, is captured in the request's own scope: it
	carries what the handler set (tag, breadcrumb); a later request of the same connection does not.
	"""
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def busy_tagged(request):
		request.app["app"].SentryService.set_tag("step", "busy")
		sentry_sdk.add_breadcrumb(message="looked at the queue")
		return aiohttp.web.Response(status=503)

	async def crash_later(request):
		raise RuntimeError("later")

	# One keep-alive connection: both requests run in the same connection task.
	serve(
		[("GET", "/busy", busy_tagged), ("GET", "/later", crash_later)],
		lambda s, base, app: get_all(s, base, ["/busy", "/later"]),
	)
	events = {e["transaction"]: e for e in payloads(collector, count=2)}
	busy, later = events["GET /busy"], events["GET /later"]
	assert busy["logentry"]["formatted"] == "GET /busy responded with status 503"
	assert busy["tags"]["step"] == "busy"
	assert "looked at the queue" in [c.get("message") for c in busy["breadcrumbs"]["values"]]
	assert "step" not in later.get("tags", {})
	assert "looked at the queue" not in [c.get("message") for c in later.get("breadcrumbs", {}).get("values", [])]


def test_plain_http_exceptions(collector):
	"""Case 12, plain mode: a raised 500 is one event, a raised 404 none."""
	configure({"sentry": {"data_source_name": collector.dsn}})
	serve(
		[("GET", "/broken", server_error), ("GET", "/missing", not_found)],
		lambda s, base, app: get_all(s, base, ["/broken", "/missing"]),
	)
	(event,) = payloads(collector, count=2, timeout=2.0)
	assert event["transaction"] == "GET /broken"


def test_ignored_paths_have_no_transactions(collector):
	configure(
		{
			"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"},
			"sentry:web": {"ignore_paths": "/healthz, /ready*"},
		}
	)
	serve(
		[("GET", "/asab/v1/config", ok), ("GET", "/healthz", ok), ("GET", "/ready/db", ok), ("GET", "/work", ok)],
		lambda s, base, app: get_all(s, base, ["/asab/v1/config", "/healthz", "/ready/db", "/work"]),
	)
	txns = transactions(collector, count=2, timeout=2.0)
	assert [t["transaction"] for t in txns] == ["GET /work"]


# -- Tenant, user, breadcrumbs --------------------------------------------------------------------------------


def test_tenant_tag_and_user_id_from_asab_context(collector, tmp_path):
	claims = tmp_path / "claims.json"
	claims.write_text(
		json.dumps(
			{
				"sub": "user-17",
				"preferred_username": "alice",
				"email": "alice@example.com",
				"iat": 1,
				"exp": 4e9,
				"resources": {"acme": ["orders:read"]},
			}
		)
	)
	configure(
		{
			"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"},
			"tenants": {"ids": "acme, globex"},
			"web": {"listen": "127.0.0.1 0"},  # asab's tenant and auth services install themselves on [web]
			"auth": {"enabled": "mock", "mock_claims_path": str(claims)},
		}
	)

	async def tenant_orders(request):
		request.app["app"].SentryService.capture_message("listing orders")
		raise RuntimeError("orders of {} unavailable".format(asab.contextvars.Tenant.get()))

	def extra(app):
		import asab.web.auth
		import asab.web.tenant

		asab.web.tenant.TenantService(app)
		asab.web.auth.AuthService(app)

	serve(
		[("GET", "/{tenant}/orders", tenant_orders)], lambda s, base, a: get_all(s, base, ["/acme/orders"]), extra=extra
	)
	events = payloads(collector, count=2)
	assert len(events) == 2
	for event in events:
		assert event["tags"]["tenant"] == "acme"
		assert event["user"] == {"id": "user-17"}, "nothing more about the user without send_default_pii"
	(txn,) = transactions(collector)
	assert txn["tags"]["tenant"] == "acme" and txn["user"]["id"] == "user-17"


def test_access_log_records_become_readable_breadcrumbs(collector):
	configure({"sentry": {"data_source_name": collector.dsn}, "logging": {"level": "NOTICE"}})

	async def client(session, base, app):
		# One keep-alive connection: the access log of a request is a breadcrumb of the connection's later events.
		await get_all(session, base, ["/users/7", "/crash"])

	serve([("GET", "/users/{id}", ok), ("GET", "/crash", crash)], client)
	(event,) = payloads(collector)
	crumbs = [c for c in event["breadcrumbs"]["values"] if c.get("category") == "asab.web.al"]
	assert crumbs, event["breadcrumbs"]
	crumb = crumbs[0]
	assert crumb["message"].startswith("GET /users/7 → 200 in ") and crumb["message"].endswith(" ms")
	assert crumb["type"] == "http" and crumb["data"]["status_code"] == 200


def test_access_log_breadcrumbs_are_the_services_not_copied_into_every_request(collector):
	"""asab's access log goes to sentry-sdk's global scope: a request's own isolation scope never holds (and never
	copies) the access log of earlier requests, and every later event of the service shows it, also one made on
	another connection or outside requests."""
	configure({"sentry": {"data_source_name": collector.dsn}, "logging": {"level": "NOTICE"}})
	seen = []

	async def look(request):
		seen.append([c.get("category") for c in sentry_sdk.get_isolation_scope()._breadcrumbs])
		return aiohttp.web.Response(text="ok")

	async def client(session, base, app):
		await get_all(session, base, ["/look", "/users/7", "/look"])
		async with aiohttp.ClientSession() as other:  # another connection
			await get_all(other, base, ["/crash"])
		app.SentryService.capture_message("outside requests")

	serve([("GET", "/look", look), ("GET", "/users/{id}", ok), ("GET", "/crash", crash)], client)
	assert seen == [[], []], seen
	events = payloads(collector)
	assert len(events) == 2
	for event in events:
		messages = [c["message"] for c in event["breadcrumbs"]["values"] if c.get("category") == "asab.web.al"]
		assert any(m.startswith("GET /users/7 → 200 in ") for m in messages), messages


def test_access_log_of_ignored_paths_stays_out_of_the_services_breadcrumbs(collector):
	"""Requests of ignored paths (asab's own API, always: monitoring scrapes /asab/v1/metrics; health checks) are
	passed through untouched: their access log does not go to the global scope, where it would fill the breadcrumbs of
	every event of the service. It stays in the scope of its connection, as any other record written there."""
	configure(
		{
			"sentry": {"data_source_name": collector.dsn},
			"sentry:web": {"ignore_paths": "/healthz"},
			"logging": {"level": "NOTICE"},
		}
	)

	async def client(session, base, app):
		await get_all(session, base, ["/users/7"])
		async with aiohttp.ClientSession() as monitoring:  # its own connection, as a scraper's or a probe's
			await get_all(monitoring, base, ["/asab/v1/metrics", "/healthz"] * 3)
		async with aiohttp.ClientSession() as other:
			await get_all(other, base, ["/crash"])
		app.SentryService.capture_message("outside requests")

	serve(
		[
			("GET", "/users/{id}", ok),
			("GET", "/asab/v1/metrics", ok),
			("GET", "/healthz", ok),
			("GET", "/crash", crash),
		],
		client,
	)
	events = payloads(collector)
	assert len(events) == 2
	for event in events:
		messages = [c["message"] for c in event["breadcrumbs"]["values"] if c.get("category") == "asab.web.al"]
		assert messages and messages[0].startswith("GET /users/7 → 200 in "), messages
		assert not any("/asab/v1/" in m or "/healthz" in m for m in messages), messages


@pytest.mark.parametrize("rate", ["0", "1.0"])
def test_asab_request_context_is_set_by_the_one_middleware(collector, rate):
	"""asab's set_request_context middleware is replaced by ours, which sets asab.contextvars.Request itself (one
	middleware less per request), for instrumented and ignored paths alike, and resets it after."""
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": rate}})
	seen = []

	async def look(request):
		seen.append(asab.contextvars.Request.get(None) is request)
		return aiohttp.web.Response(text="ok")

	async def client(session, base, app):
		await get_all(session, base, ["/look", "/asab/v1/look"])
		middlewares = list(app.Container.WebApp.middlewares)
		return [getattr(m, "__name__", "") for m in middlewares], asab.contextvars.Request.get(None)

	app = serve([("GET", "/look", look), ("GET", "/asab/v1/look", look)], client)
	names, after = app.Result
	assert seen == [True, True]
	assert "set_request_context" not in names and names[0] == "asab_sentry_middleware"
	assert after is None


# -- Distributed traces and outgoing requests -----------------------------------------------------------------


async def echo_headers(request):
	return aiohttp.web.json_response({k.lower(): v for k, v in request.headers.items()})


def calling(url_of):
	async def handler(request):
		async with aiohttp.ClientSession() as session:
			async with session.get(url_of(request), headers={"baggage": "vendor=x"}) as response:
				return aiohttp.web.json_response(await response.json())

	return handler


def loopback_echo(request):
	return "http://127.0.0.1:{}/echo".format(request.url.port)


def test_outgoing_requests_get_a_span_and_trace_headers(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1", "release": "orders@1.2"}})

	async def client(session, base, app):
		async with session.get(base + "/call") as response:
			return await response.json()

	app = serve([("GET", "/echo", echo_headers), ("GET", "/call", calling(loopback_echo))], client)
	received = app.Result
	txns = {t["transaction"]: t for t in transactions(collector, count=2)}
	caller, callee = txns["GET /call"], txns["GET /echo"]
	(span,) = [s for s in caller["spans"] if s["op"] == "http.client"]
	assert span["description"].startswith("GET http://127.0.0.1:")
	# sentry-sdk 2.27 (the oldest supported) sends a span's status as its tag "status"; newer ones as "status".
	assert span.get("status", span.get("tags", {}).get("status")) == "ok"
	trace_id, span_id, sampled = received["sentry-trace"].split("-")
	assert (trace_id, span_id, sampled) == (trace(caller)["trace_id"], span["span_id"], "1")
	assert trace(callee)["trace_id"] == trace_id and trace(callee)["parent_span_id"] == span_id
	baggage = dict(item.split("=", 1) for item in received["baggage"].split(","))
	assert baggage["sentry-trace_id"] == trace_id
	assert baggage["sentry-public_key"] == urllib.parse.urlsplit(collector.dsn).username
	assert baggage["sentry-release"] == "orders%401.2"
	assert baggage["vendor"] == "x", "other baggage entries are kept"


def test_propagation_only_to_matching_hosts(collector):
	configure(
		{
			"sentry": {"data_source_name": collector.dsn},
			"sentry:web": {"trace_propagation_targets": "private, *.corp.example"},
		}
	)

	async def client(session, base, app):
		async with session.get(base + "/call") as response:
			return await response.json()

	app = serve([("GET", "/echo", echo_headers), ("GET", "/call", calling(loopback_echo))], client)
	assert "sentry-trace" not in app.Result, "127.0.0.1 is not in the targets"
	assert app.Result["baggage"] == "vendor=x"


def test_tracing_off_still_propagates_the_trace_to_peers(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})
	headers = {
		"sentry-trace": "{}-{}-1".format(TRACE_ID, PARENT_SPAN),
		"baggage": "sentry-trace_id={}".format(TRACE_ID),
	}

	async def client(session, base, app):
		async with session.get(base + "/call", headers=headers) as response:
			return await response.json()

	app = serve([("GET", "/echo", echo_headers), ("GET", "/call", calling(loopback_echo))], client)
	assert app.Result["sentry-trace"].startswith(TRACE_ID + "-") and app.Result["sentry-trace"].endswith("-1")
	assert app.Result["baggage"].split(",")[0] == "sentry-trace_id={}".format(TRACE_ID), "the caller's, unchanged"


def test_default_targets():
	targets = PropagationTargets(("loopback", "private", "single-label", "cluster-local"))
	for host in ("localhost", "127.0.0.1", "::1", "10.1.2.3", "192.168.0.5", "users", "orders.shop.svc.cluster.local"):
		assert targets.matches(host), host
	for host in ("api.github.com", "8.8.8.8", "sentry.io", "example.com", None):
		assert not targets.matches(host), host
	assert PropagationTargets(("*.corp.example", "100.64.0.0/10")).matches("db.corp.example")
	assert PropagationTargets(("100.64.0.0/10",)).matches("100.64.1.1")
	assert not PropagationTargets(()).matches("localhost")


SERVICE_B = """
import asyncio, sys, aiohttp.web, asab, asab.web, asab_sentry
asab.Config.read_string("[sentry]\\ntraces_sample_rate=1\\n")

class B(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		self.SentryService = asab_sentry.SentryService(self)
		self.add_module(asab.web.Module)
		self.Container = asab.web.WebContainer(self.get_service("asab.WebService"), "web", config={"listen": "127.0.0.1 0"})
		self.Container.WebApp.router.add_get("/prices/{sku}", self.price)
		self.PubSub.subscribe("WebContainer.started!", self.started)

	def started(self, message, container):
		print(container.Addresses[0][1], flush=True)

	async def price(self, request):
		self.SentryService.capture_message("price looked up")
		return aiohttp.web.json_response({"price": 7})

	async def main(self):
		await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
		self.stop()

B().run()
"""


def test_one_trace_across_two_chained_services(collector, tmp_path):
	"""Service A (this process) calls service B (its own process); both report to the same collector."""
	script = tmp_path / "service_b.py"
	script.write_text(textwrap.dedent(SERVICE_B))
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	env["SENTRY_DSN"] = collector.dsn
	b = subprocess.Popen(
		[sys.executable, str(script)],
		stdin=subprocess.PIPE,
		stdout=subprocess.PIPE,
		stderr=subprocess.DEVNULL,
		env=env,
		text=True,
	)
	try:
		port = int(b.stdout.readline())
		configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

		async def client(session, base, app):
			async with session.get(base + "/orders/1") as response:
				return await response.json()

		app = serve(
			[("GET", "/orders/{id}", calling(lambda request: "http://localhost:{}/prices/x1".format(port)))], client
		)
		assert app.Result == {"price": 7}
	finally:
		b.communicate("stop\n", timeout=30)
	items = payloads(collector, type=None, count=3, timeout=10)
	by_name = {(i.get("type", "event"), i.get("transaction")): i for i in items}
	a = by_name[("transaction", "GET /orders/{id}")]
	b_txn = by_name[("transaction", "GET /prices/{sku}")]
	b_event = by_name[("event", "GET /prices/{sku}")]
	trace_id = trace(a)["trace_id"]
	assert trace(b_txn)["trace_id"] == trace_id and trace(b_event)["trace_id"] == trace_id
	(client_span,) = [s for s in a["spans"] if s["op"] == "http.client"]
	assert trace(b_txn)["parent_span_id"] == client_span["span_id"]


@pytest.mark.parametrize("value", ["https://partner.example/", "10.0.0.0/99"])
def test_bad_propagation_targets_is_one_clear_line(value):
	from asab_sentry import SentryConfigError

	configure(
		{"sentry": {"data_source_name": "https://k@localhost/1"}, "sentry:web": {"trace_propagation_targets": value}}
	)
	with pytest.raises(SentryConfigError) as info:
		asab_sentry.SentryService(asab.Application(args=[]))
	assert "[sentry:web] trace_propagation_targets" in str(info.value)


def test_instrumentation_can_be_switched_off(collector):
	configure(
		{"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}, "sentry:web": {"enabled": "no"}}
	)
	app = serve([("GET", "/crash", crash), ("GET", "/a", ok)], lambda s, base, app: get_all(s, base, ["/a", "/crash"]))
	assert app.SentryService.Web is None
	items = payloads(collector, type=None, count=2, timeout=2.0)
	assert [i.get("type", "event") for i in items] == ["event"], (
		"no transactions; the crash still reported (aiohttp's log)"
	)
	assert "request" not in items[0]


def test_send_default_pii_adds_user_details_and_client_address(collector, tmp_path):
	claims = tmp_path / "claims.json"
	claims.write_text(
		json.dumps({"sub": "user-17", "preferred_username": "alice", "email": "a@example.com", "iat": 1, "exp": 4e9})
	)
	configure(
		{
			"sentry": {"data_source_name": collector.dsn, "send_default_pii": "true"},
			"auth": {"enabled": "mock", "mock_claims_path": str(claims)},
			"web": {"listen": "127.0.0.1 0"},
		}
	)

	def extra(app):
		import asab.web.auth

		asab.web.auth.AuthService(app)

	headers = {"X-Forwarded-For": "203.0.113.9"}
	serve([("GET", "/crash", crash)], lambda s, base, a: get_all(s, base, ["/crash"], headers), extra=extra)
	(event,) = payloads(collector)
	assert event["user"] == {"id": "user-17", "username": "alice", "email": "a@example.com", "ip_address": "127.0.0.1"}
	assert {k.lower(): v for k, v in event["request"]["headers"].items()}["x-forwarded-for"] == "203.0.113.9"


def test_undecodable_url_and_odd_span_data_still_give_a_valid_transaction(collector):
	"""Relay's normalizer (the referee of every test) must accept what the lean transaction path serializes."""
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

	async def odd(request):
		with request.app["app"].SentryService.span("db", "load"):
			span = __import__("sentry_sdk").get_current_span()
			span.set_data("ratio", float("nan"))
			span.set_data("name", "caf\udce9")
			span.set_data("password", "hunter2")
		return aiohttp.web.Response(text="ok")

	async def client(session, base, app):
		return await get_all(session, base, ["/odd/%FF?q=%FF"])

	app = serve([("GET", "/odd/{x}", odd)], client)
	assert app.Result == [200]
	(txn,) = transactions(collector)
	(span,) = txn["spans"]
	assert span["data"]["ratio"] is None and span["data"]["name"] == "caf\ufffd"
	assert span["data"]["password"] == "[Filtered]"


def test_request_headers_asab_web_logs_are_scrubbed_in_breadcrumbs(collector):
	"""asab.web logs a failed request with its headers (multidict's istr names, a str subclass): filtered too."""
	configure({"sentry": {"data_source_name": collector.dsn}, "sentry:web": {"failed_status_codes": "404"}})
	headers = {"X-Api-Key": "k3y-" + "of-the-caller"}
	serve(
		[("GET", "/missing", not_found), ("GET", "/crash", crash)],
		lambda s, base, app: get_all(s, base, ["/missing", "/crash"], headers),
		middlewares=[asab.web.rest.JsonExceptionMiddleware],
	)
	events = payloads(collector, count=2, timeout=3.0)
	crumbs = [c for e in events for c in e.get("breadcrumbs", {}).get("values", []) if "X-Api-Key" in c.get("data", {})]
	assert crumbs and all(c["data"]["X-Api-Key"] == "[Filtered]" for c in crumbs)
	assert "of-the-caller" not in json.dumps(events)
