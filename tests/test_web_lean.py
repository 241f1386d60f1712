"""
web.py sends a request's transaction without encoding it each time: the payload and the envelope's headers come
from templates (what varies per request filled into the text of an earlier request), in an envelope serialized
when it is built. These tests hold real requests' templated bytes against the usual encoding of the same data.
"""

from __future__ import annotations

import json

import aiohttp.web
import sentry_sdk
import sentry_sdk.envelope
import sentry_sdk.utils

from asab_sentry import web
from helpers import configure
from test_web_requests import PARENT_SPAN, TRACE_ID, crash, ok, serve, transactions


async def tagged(request):
	sentry_sdk.set_tag("plan", request.query.get("plan", "gold"))
	sentry_sdk.set_user({"id": "7", "password": "hunter2"})
	return aiohttp.web.Response(text="ok")


async def tagged_int(request):
	sentry_sdk.set_tag("ratio", 0.5)  # neither str nor int: no template (1.0 == 1 == True), the usual way
	return aiohttp.web.Response(text="ok")


async def with_span(request):
	with sentry_sdk.start_span(op="db", name="load"):
		pass
	return aiohttp.web.Response(text="ok")


PATHS = [
	"/",
	"/",
	"/",
	"/users/7",
	"/users/8?page=2&access_token=tok3nA",
	"/users/9?page=2&access_token=tok3nB",
	"/tagged?plan=gold",
	"/tagged?plan=gold",
	"/tagged?plan=silver",
	"/tagged_int",
	"/tagged_int",
	"/span",
	"/span",
	"/crash",
	"/crash",
	"/zákazníci/ü{x}",
	"/zákazníci/ü{y}",
	"/nowhere/1",
	"/nowhere/2",
]
ROUTES = [
	("GET", "/", ok),
	("GET", "/users/{id}", ok),
	("GET", "/tagged", tagged),
	("GET", "/tagged_int", tagged_int),
	("GET", "/span", with_span),
	("GET", "/crash", crash),
	("GET", "/zákazníci/{name}", ok),
]


def record(monkeypatch) -> dict[str, list]:
	"""Each request's templated payload and envelope headers beside the usual encoding of the same data."""
	seen: dict[str, list] = {"payloads": [], "headers": []}
	templated, envelope_header = web.WebInstrumentation._templated, web.WebInstrumentation._envelope_header

	def _templated(self, client, state, transaction, tags, user, span_data, event_id, start, end):
		copies = (dict(tags), dict(user) if user else user, dict(span_data))
		payload = templated(self, client, state, transaction, tags, user, span_data, event_id, start, end)
		event = self._transaction_event(
			client, state, transaction, copies[0], copies[1], {}, copies[2], [], event_id, start, end
		)
		seen["payloads"].append((state.Request.path_qs, payload, web._transaction_payload(event)))
		return payload

	def _envelope_header(self, state, event_id, client):
		header = envelope_header(self, state, event_id, client)
		expected = sentry_sdk.utils.json_dumps({"event_id": event_id, "trace": self._dsc(state)})
		seen["headers"].append((state.Request.path_qs, header, expected))
		return header

	monkeypatch.setattr(web.WebInstrumentation, "_templated", _templated)
	monkeypatch.setattr(web.WebInstrumentation, "_envelope_header", _envelope_header)
	return seen


async def get_each(session, base, app=None, headers=None):
	statuses = []
	for path in PATHS:
		async with session.get(base + path, headers=headers or {}) as response:
			await response.read()
			statuses.append(response.status)
	return statuses


def test_templated_transactions_are_the_usual_encoding_byte_for_byte(collector, monkeypatch):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1", "scrub_keys": "plan"}})
	seen = record(monkeypatch)
	app = serve(ROUTES, get_each)
	assert app.Result[-6:] == [500, 500, 404, 404, 404, 404]  # (the non-ASCII route is not matched: unmatched)
	received = transactions(collector, count=len(PATHS))
	assert len(received) == len(PATHS)

	payloads = seen["payloads"]
	templated = [path for path, payload, expected in payloads if payload is not None]
	for path, payload, expected in payloads:
		if payload is not None:
			assert payload == expected, path
	# From the second request of a kind on (the query string, the URL may differ), not with a span or a float tag.
	assert templated.count("/") == 2
	assert templated.count("/users/7") == 0  # (the first without a query string)
	assert templated.count("/users/9?page=2&access_token=tok3nB") == 1
	assert templated.count("/tagged?plan=gold") == 1
	assert templated.count("/crash") == 1 and templated.count("/nowhere/2") == 1
	assert not any(p in ("/tagged_int", "/span") for p in templated)
	assert len(payloads) == len(PATHS) - 2  # the requests with a span go the usual way without asking

	for path, header, expected in seen["headers"]:
		assert header == expected, path

	# What arrived: secrets filtered, the request's own URL and ids.
	text = json.dumps(received)
	assert "tok3nA" not in text and "tok3nB" not in text and "hunter2" not in text
	assert '"plan": "[Filtered]"' in text
	urls = sorted(t["request"]["url"].split("/", 3)[3] for t in received if t["transaction"] == "GET /users/{id}")
	assert urls == ["users/7", "users/8", "users/9"]
	assert len({t["event_id"] for t in received}) == len(PATHS)
	assert len({t["contexts"]["trace"]["trace_id"] for t in received}) == len(PATHS)


def test_templated_transactions_continue_the_callers_trace(collector, monkeypatch):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	seen = record(monkeypatch)
	headers = {"sentry-trace": "{}-{}-1".format(TRACE_ID, PARENT_SPAN), "baggage": "sentry-trace_id=" + TRACE_ID}
	serve(ROUTES, lambda s, base, app: get_each(s, base, app, headers))
	received = transactions(collector, count=len(PATHS))
	assert {t["contexts"]["trace"]["trace_id"] for t in received} == {TRACE_ID}
	assert {t["contexts"]["trace"]["parent_span_id"] for t in received} == {PARENT_SPAN}
	assert sum(payload is not None for _, payload, _ in seen["payloads"]) >= 7
	for path, payload, expected in seen["payloads"]:
		if payload is not None:
			assert payload == expected, path
	for path, header, expected in seen["headers"]:
		assert header == expected, path


def test_encoded_envelope_serializes_as_sentry_sdk_does():
	header = sentry_sdk.utils.json_dumps({"event_id": "a" * 32, "trace": {"trace_id": "b" * 32, "transaction": "ü"}})
	payload = '{"type":"transaction","transaction":"GET /ü"}'.encode()
	envelope = web._EncodedEnvelope(header, "transaction", payload)
	usual = sentry_sdk.envelope.Envelope(headers=json.loads(header))
	usual.add_item(sentry_sdk.envelope.Item(payload=sentry_sdk.envelope.PayloadRef(bytes=payload), type="transaction"))
	assert envelope.serialize() is envelope._data  # made when built
	assert envelope.serialize() == usual.serialize()
	assert envelope.headers == usual.headers
	envelope.headers["sent_at"] = "2026-01-01T00:00:00Z"  # changed in place: serialized again
	usual.headers["sent_at"] = "2026-01-01T00:00:00Z"
	assert envelope.serialize() == usual.serialize()
	assert [i.data_category for i in envelope.items] == ["transaction"]
	assert sentry_sdk.envelope.Envelope.deserialize(envelope.serialize()).items[0].payload.json == json.loads(payload)

	# Changed afterwards: serialized by sentry-sdk's code.
	envelope.add_item(sentry_sdk.envelope.Item(payload=b"x", type="attachment"))
	usual.add_item(sentry_sdk.envelope.Item(payload=b"x", type="attachment"))
	assert envelope.serialize() == usual.serialize()
	envelope.headers = {"event_id": "c" * 32}
	assert envelope.serialize().startswith(b'{"event_id":"' + b"c" * 32 + b'"}\n')


def test_format_template_fills_each_slot_once():
	text = '{"a":"S1","b":{"c":"S2"}}'
	template = web._format_template(text, {"one": '"S1"', "two": '"S2"'})
	assert template.format_map({"one": "1.5", "two": '"x"'}) == '{"a":1.5,"b":{"c":"x"}}'
	assert web._format_template('["S1","S1"]', {"one": '"S1"'}) is None
	assert web._format_template('["S1"]', {"one": '"S1"', "two": '"S2"'}) is None
