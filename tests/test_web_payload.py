"""
web.py encodes a request's transaction once (`_transaction_payload`): byte for byte what the final pass
(`limits.finalize`) followed by the JSON encoding gives, for the events it takes the short way and for those it
passes to the final pass (lone surrogates, NaN, objects JSON cannot carry, large events).
"""

from __future__ import annotations

import copy
import datetime

import pytest

from asab_sentry import breadcrumbs, limits, scrub, web


def transaction(**changes) -> dict:
	"""A request's transaction as web.py builds it (the benchmark's hello world), with ``changes`` applied."""
	event = {
		"type": "transaction",
		"event_id": "14d83d67b4fce4964f57eee51025928e",
		"transaction": "GET /users/{id}",
		"transaction_info": {"source": "route"},
		"contexts": {
			"trace": {
				"trace_id": "9fecf8c156ae332ded1c10bccaff7753",
				"span_id": "58a4a8e99f23ff80",
				"op": "http.server",
				"origin": "auto.http.asab_sentry",
				"status": "ok",
				"data": {"thread.id": "140219942443904", "thread.name": "MainThread", "http.response.status_code": 200},
			},
			"runtime": {"name": "CPython", "version": "3.11.7", "build": "3.11.7 (main) [GCC 12.2.0]"},
			"response": {"status_code": 200},
		},
		"tags": {"appclass": "App", "http.status_code": "200"},
		"start_timestamp": 1795960239.600536,
		"timestamp": 1795960239.6005392,
		"spans": [],
		"request": {"method": "GET", "url": "http://127.0.0.1/users/7"},
		"platform": "python",
		"sdk": {"name": "sentry.python", "version": "2.75.0"},
		"release": "1.0",
		"environment": "production",
		"server_name": "vm",
	}
	for key, value in changes.items():
		event[key] = value
	return event


def span(**data) -> dict:
	return {
		"trace_id": "9fecf8c156ae332ded1c10bccaff7753",
		"span_id": "1111222233334444",
		"parent_span_id": "58a4a8e99f23ff80",
		"op": "db",
		"description": "SELECT 1",
		"start_timestamp": 1795960239.6,
		"timestamp": 1795960239.61,
		"data": data,
	}


SECRETS = transaction(
	tags={"appclass": "App", "api_key": "abc", "user_ssn": "123", "tenant": "acme"},
	user={"id": "7", "password": "p"},
	request={"method": "GET", "url": "http://u:pw@127.0.0.1/x", "query_string": "page=2&access_token=abc"},
	spans=[span(token="t", url="http://h/?secret=1", rows=3)],
)
SECRETS["contexts"]["credentials"] = {"type": "x", "value": "v"}

CASES = {
	"hello world": transaction(),
	"secrets": SECRETS,
	"non-ASCII": transaction(transaction="GET /zákazníci/{id} 🚀", tags={"tenant": "Příliš žluťoučký kůň"}),
	"lone surrogate": transaction(tags={"tenant": "a\udc80b"}),
	"NaN": transaction(spans=[span(ratio=float("nan"), top=float("inf"))]),
	"an object": transaction(spans=[span(at=datetime.datetime(2026, 1, 2, 3, 4, 5))]),
	"near the size limit": transaction(spans=[span(text="x" * 1000) for _ in range(100)]),
	"over the size limit": transaction(spans=[span(text="y" * 5000) for _ in range(300)]),
}


@pytest.fixture(params=[(None, False), (breadcrumbs.restore, True)], ids=["plain", "as-the-service-sets-it-up"])
def final_pass(request):
	before, keep_encoding = request.param
	limits.install(limits.FinalPass(scrub.configure(["ssn"]), before=before, keep_encoding=keep_encoding))
	yield
	limits.uninstall()
	scrub.configure()


@pytest.mark.parametrize("name", list(CASES))
def test_one_encoding_is_what_the_final_pass_and_the_encoder_give(final_pass, name):
	event = CASES[name]
	expected = web._json_payload(limits.finalize(copy.deepcopy(event)))
	assert web._transaction_payload(copy.deepcopy(event)) == expected


def test_secrets_are_filtered(final_pass):
	text = web._transaction_payload(copy.deepcopy(SECRETS)).decode()
	for secret in ('"abc"', '"123"', '"p"', "access_token=abc", '"t"', "secret=1", ":pw@", '"v"'):
		assert secret not in text
	assert "acme" in text and "page=2" in text


def test_another_final_pass_step_is_run(monkeypatch):
	# A before step the short way does not know: the final pass runs as it is.
	def before(event, hint):
		event["tags"]["added"] = "by before"
		return event

	limits.install(limits.FinalPass(scrub.configure(), before=before))
	try:
		assert b'"added":"by before"' in web._transaction_payload(transaction())
	finally:
		limits.uninstall()
