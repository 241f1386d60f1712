"""
Templated request transactions (web.py's _templated, _envelope_header) against the usual encoding of the same
request: inputs that differ between requests of one kind.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import aiohttp.web
import asab.contextvars
import pytest
import sentry_sdk
import yarl

from asab_sentry import web
from helpers import configure
from test_web_lean import record
from test_web_requests import ok, serve, transactions


def check(seen):
	"""Every templated payload and header is the usual encoding; returns how many were templated."""
	templated = 0
	for path, payload, expected in seen["payloads"]:
		if payload is not None:
			templated += 1
			assert payload == expected, path
	for path, header, expected in seen["headers"]:
		assert header == expected, path
	return templated


ODD = [
	"/users/1",
	"/users/2",
	"/users/%22q%5C%00%0A%7B%7D",
	"/users/%FF%FE",
	"/users/%ED%A0%80",
	"/users/%F0%9F%98%80",
	"/users/%3Ftoken=tok3n",
	"/users/a%40b",
	"/users/x?%FF=1&token=%ED%A0%80",
	"/users/y?a=%22&b=\\",
	"/users/z?q=%C3%A9%F0%9F%98%80&p=%22",
]
HOSTS = ['ex"ample', "bob:hunter2@host", "h\u00e9llo", "a\\b", "{0}", "\U0001f600"]


def test_odd_urls_and_hosts(collector, monkeypatch):
	# Percent-encoded quotes, backslashes, NUL, invalid UTF-8, an encoded surrogate, emoji, an encoded "?" and "@"
	# in the path; odd Host headers (a password, braces, non-ASCII): each request's own bytes, secrets filtered.
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	seen = record(monkeypatch)

	async def client(session, base, app):
		for path in ODD:
			async with session.get(yarl.URL(base + path, encoded=True)) as response:
				await response.read()
		for host in HOSTS:
			for _ in range(2):
				async with session.get(base + "/users/3", headers={"Host": host}) as response:
					await response.read()

	serve([("GET", "/users/{id}", ok)], client)
	n = len(ODD) + 2 * len(HOSTS)
	received = transactions(collector, count=n)
	assert len(received) == n
	assert check(seen) >= len(ODD) - 3 + len(HOSTS)  # (the first of a kind, with and without a query, is not)
	assert "hunter2" not in json.dumps(received)
	assert "tok3n" not in json.dumps(received)


def test_envelope_header_template_follows_the_client(collector, monkeypatch):
	# A handler that reports some requests through a client of its own (a tenant's, bound to the request's scope)
	# and calls a peer: the envelope's headers carry that client's release, not the one of the template made
	# for the route with the service's client.
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	seen = record(monkeypatch)
	other = sentry_sdk.Client(dsn=collector.dsn, release="tenant-release", environment="tenant-env")

	async def handler(request):
		if "other" in request.query:
			sentry_sdk.get_current_scope().set_client(other)
			async with aiohttp.ClientSession() as session:
				async with session.get(collector.url + "/nowhere") as response:
					await response.read()
		return aiohttp.web.Response(text="ok")

	async def client(session, base, app):
		for path in ("/b", "/b", "/b?other=1"):
			async with session.get(base + path) as response:
				await response.read()

	try:
		serve([("GET", "/b", handler)], client)
	finally:
		other.close()
	headers = [json.loads(header) for _, header, _ in seen["headers"]]
	assert headers[-1]["trace"].get("release") == "tenant-release"
	check(seen)


class _Authz:
	def __init__(self, credentials_id, username):
		self.CredentialsId, self.Username, self.Email = credentials_id, username, username + "@example.org"


async def per_request(request):
	query = request.query
	if "tenant" in query:
		asab.contextvars.Tenant.set(query["tenant"])
	if "user" in query:
		asab.contextvars.Authz.set(_Authz(query["user"], "name-" + query["user"]))
	if "status" in query:
		return aiohttp.web.Response(status=int(query["status"]), text="x")
	if "raise" in query:
		raise aiohttp.web.HTTPConflict(text=query["raise"])
	if "stream" in query:
		response = aiohttp.web.StreamResponse()
		await response.prepare(request)
		await response.write(b"chunk")
		await response.write_eof()
		return response
	return aiohttp.web.Response(text="ok")


PER_REQUEST = [
	("GET", "/p?tenant=alpha"),
	("GET", "/p?tenant=alpha"),
	("GET", "/p?tenant=beta"),
	("GET", "/p?tenant=beta&user=u1"),
	("GET", "/p?tenant=beta&user=u1"),
	("GET", "/p?tenant=beta&user=u2"),
	("GET", "/p?status=201"),
	("GET", "/p?status=201"),
	("GET", "/p?status=418"),
	("GET", "/p?raise=a"),
	("GET", "/p?raise=b"),
	("GET", "/p?stream=1"),
	("GET", "/p?stream=2"),
	("HEAD", "/p"),
	("HEAD", "/p"),
	("OPTIONS", "/p"),
	("OPTIONS", "/p"),
	("GET", "/p?tenant=alpha"),
]


@pytest.mark.parametrize("pii", ["false", "true"])
def test_per_request_tenant_user_status_and_methods(collector, monkeypatch, pii):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1", "send_default_pii": pii}})
	seen = record(monkeypatch)

	async def client(session, base, app):
		for method, path in PER_REQUEST:
			async with session.request(method, base + path, headers={"User-Agent": path}) as response:
				await response.read()

	serve([("*", "/p", per_request)], client)
	# In the order of the requests (made one after the other): the delivery's senders may deliver out of order.
	received = sorted(transactions(collector, count=len(PER_REQUEST)), key=lambda t: t["start_timestamp"])
	assert len(received) == len(PER_REQUEST)
	templated = check(seen)
	assert templated >= (0 if pii == "true" else 8)
	tenants = [t.get("tags", {}).get("tenant") for t in received]
	users = [t.get("user", {}).get("id") for t in received]
	assert tenants[:6] == ["alpha", "alpha", "beta", "beta", "beta", "beta"]
	assert users[3:6] == ["u1", "u1", "u2"]
	assert tenants[-1] == "alpha" and users[-1] is None


def _retained(instrumentation) -> int:
	"""Characters the template caches hold: their keys' texts and the templates."""
	total = 0
	for cache in (instrumentation._seen, instrumentation._templates):
		for key, template in cache.items():
			for part in key if isinstance(key, tuple) else ():
				pairs = part if isinstance(part, tuple) else ((part, None),)
				for pair in pairs:
					for text in pair if isinstance(pair, tuple) else (pair,):
						total += len(text) if isinstance(text, str) else 0
			total += len(template) if isinstance(template, str) else 0
	return total


async def big_data(request):
	# A large value unique to each request in the transaction's data (a query's text, say).
	n = request.match_info["n"]
	if "name" in request.query:  # or as the transaction's name, set by the handler
		sentry_sdk.get_current_scope().set_transaction_name("GET /big/" + n * 50_000)
	else:
		sentry_sdk.get_current_span().set_data("db.statement", n * 50_000)
	return aiohttp.web.Response(text="ok")


@pytest.mark.parametrize("where", ["", "?name"])
def test_template_caches_do_not_keep_large_values(collector, where):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	count = 20

	async def client(session, base, app):
		for n in range(count):
			async with session.get(base + "/big/{}{}".format(n, where)) as response:
				await response.read()
		return _retained(app.SentryService.Web)

	app = serve([("GET", "/big/{n}", big_data)], client)
	assert len(transactions(collector, count=count)) == count
	assert app.Result < 100_000  # not the 20 requests' values (about 1.5 million characters)


@pytest.mark.parametrize("rand", [0.4999996, 0.9999997])
def test_sample_rand_is_never_rounded_up(collector, monkeypatch, rand):
	# Sentry's sample_rand is in [0, 1) with 6 decimals, and the decision is sample_rand < rate: a random number
	# written rounded up (0.4999996 as "0.500000", 0.9999997 as "1.000000") tells Sentry and the callees a value
	# the decision did not use (sampled at rate 0.5 with sample_rand 0.5), or one outside the range.
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "0.5" if rand < 0.5 else "1"}})
	seen = record(monkeypatch)
	monkeypatch.setattr(web, "_random", lambda: rand)
	sent = []

	async def peer(request):
		sent.append((request.headers.get("sentry-trace"), request.headers.get("baggage")))
		return aiohttp.web.Response(text="ok")

	async def calls_peer(request):
		async with aiohttp.ClientSession() as session:
			async with session.get(str(request.url.with_path("/peer"))) as response:
				await response.read()
		return aiohttp.web.Response(text="ok")

	async def client(session, base, app):
		for _ in range(3):
			async with session.get(base + "/call") as response:
				await response.read()

	serve([("GET", "/call", calls_peer), ("GET", "/peer", peer)], client)
	transactions(collector, count=6)
	check(seen)
	values = {json.loads(header)["trace"]["sample_rand"] for _, header, _ in seen["headers"]}
	values |= {b.split("sentry-sample_rand=")[1].split(",")[0] for _, b in sent}
	assert values == {"{:.6f}".format(int(rand * 1_000_000) / 1_000_000)}


@pytest.mark.parametrize("sentry_trace", ["not-a-trace", "0" * 32 + "-" + "0" * 16 + "-1"])
def test_baggage_without_a_valid_sentry_trace_starts_a_trace_of_its_own(collector, monkeypatch, sentry_trace):
	# A sentry-trace header that is not continued (malformed, all-zero ids): the request starts a trace of its own,
	# and the caller's baggage (another trace's dynamic sampling context) is not its context.
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	seen = record(monkeypatch)
	foreign = "a" * 32
	headers = {
		"sentry-trace": sentry_trace,
		"baggage": "sentry-trace_id={},sentry-public_key=foreign,sentry-sample_rand=0.999999".format(foreign),
	}

	async def client(session, base, app):
		for _ in range(3):
			async with session.get(base + "/", headers=headers) as response:
				await response.read()

	serve([("GET", "/", ok)], client)
	received = transactions(collector, count=3)
	check(seen)
	ids = {t["contexts"]["trace"]["trace_id"] for t in received}
	assert foreign not in ids and len(ids) == 3
	for _, header, _ in seen["headers"]:
		trace = json.loads(header)["trace"]
		assert trace["trace_id"] in ids and trace.get("public_key") != "foreign"


def test_concurrent_requests_of_mixed_kinds(collector, monkeypatch):
	# Requests of a few kinds interleaved (the handler awaits in between): each transaction its own request's.
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})
	seen = record(monkeypatch)

	async def slow(request):
		sentry_sdk.set_tag("kind", request.query["k"])
		asab.contextvars.Tenant.set("t" + request.query["k"])
		await asyncio.sleep(0.001 * (int(request.query["i"]) % 3))
		return aiohttp.web.Response(status=200 + int(request.query["k"]), text="x")

	async def client(session, base, app):
		async def one(i):
			path = "/s/{}?k={}&i={}".format(i, i % 4, i)
			async with session.get(base + path) as response:
				await response.read()

		await asyncio.gather(*(one(i) for i in range(60)))

	serve([("GET", "/s/{i}", slow)], client)
	received = transactions(collector, count=60)
	assert len(received) == 60
	assert check(seen) >= 40
	for t in received:
		i = t["request"]["url"].rsplit("/", 1)[1]
		k = str(int(i) % 4)
		assert t["request"]["query_string"] == "k={}&i={}".format(k, i)
		assert t["tags"]["kind"] == k and t["tags"]["tenant"] == "t" + k
		assert t["contexts"]["response"]["status_code"] == 200 + int(k)
	assert len({t["contexts"]["trace"]["trace_id"] for t in received}) == 60
