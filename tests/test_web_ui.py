"""The collector's web UI over HTTP: pages from what real SDKs sent, every text escaped, filters, Clear
(same-origin only), Host check, and GET /stream in Spotlight's sidecar protocol."""

import base64
import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from ui_data import ATTACHMENT, HOSTILE, populate, send_error

AUTH = {"X-Sentry-Auth": "Sentry sentry_key=asab-sentry"}


def fetch(url, method="GET", headers=None, data=None):
	request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)

	class NoRedirect(urllib.request.HTTPRedirectHandler):
		def redirect_request(self, *args, **kwargs):
			return None

	opener = urllib.request.build_opener(NoRedirect)
	try:
		with opener.open(request, timeout=30) as response:
			return response.status, dict(response.headers), response.read()
	except urllib.error.HTTPError as e:
		return e.code, dict(e.headers), e.read()


def page(running, path):
	status, headers, body = fetch(running.url + path)
	assert status == 200, (path, status, body[:500])
	assert headers["Content-Type"].startswith("text/html")
	return body.decode("utf-8")


def main_part(html):
	return html[html.index('<main id="live"') :]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
	"""One collector with the shop's data for the read-only tests of this module."""
	path = str(tmp_path_factory.mktemp("ui") / "shop.sqlite")
	running = start_in_thread(Store(path), CollectorSettings())
	yield running
	running.stop()


@pytest.fixture
def shop_data(shop, referee):
	if not shop.Collector.Store.count():
		shop.Collector.Listeners.append(referee.check_collector_envelope)
		try:
			populate(shop.dsn)
		finally:
			shop.Collector.Listeners.remove(referee.check_collector_envelope)
	return shop


def item_id(running, **filters):
	(item,) = running.Collector.Store.list(limit=1, **filters)
	return item["id"]


def test_issue_list_groups_with_counts(shop_data):
	html = main_part(page(shop_data, "/"))
	rows = re.findall(r'<tr class="issue.*?</tr>', html, re.S)
	assert len(rows) == 3
	key_error = next(r for r in rows if "KeyError" in r)
	assert re.search(r'class="num count"><a href="/events\?issue=\d+"[^>]*>3</a>', key_error)
	assert "ui_data in load_order" in key_error and "shop@1.4.2" in key_error and "dev" in key_error


def test_event_page_exception_frames_locals_breadcrumbs_tags_contexts(shop_data):
	html = page(shop_data, "/events/{}".format(item_id(shop_data, type="event", text="KeyError")))
	assert '<span class="exc-type">KeyError</span>' in html
	assert '<span class="function">load_order</span>' in html
	assert "raise KeyError(&#34;order {} missing&#34;.format(order_id))" in html  # the source line
	assert re.search(r'<th class="var-name">order_id</th><td class="var-value"><pre>5</pre>', html)
	assert '<th class="var-name">customer_note</th>' in html
	assert "looking up order" in html  # breadcrumb
	assert re.search(r"<th>tenant</th><td><a [^>]*>acme</a>", html)
	assert "<h3>runtime</h3>" in html  # contexts
	assert "Issue</dt>" in html and "3 events" in html
	assert "shop@1.4.2" in html
	# Relay moves server_name into the tags; the page's facts still name the server
	server = dict(shop_data.Collector.Store.get(item_id(shop_data, type="event", text="KeyError"))["payload"]["tags"])
	assert "<dt>Server</dt><dd>{}</dd>".format(server["server_name"]) in html


def test_every_text_from_events_is_escaped(shop_data):
	store = shop_data.Collector.Store
	paths = ["/", "/events", "/logs", "/checkins", "/traces"]
	paths += ["/events/{}".format(i["id"]) for i in store.list(limit=100)]
	for path in paths:
		status, headers, body = fetch(shop_data.url + path)
		assert status == 200, path
		html = body.decode()
		assert "<script>alert" not in html and "<img src=x" not in html, path
		assert "script-src 'self'" in headers["Content-Security-Policy"], path
	assert "&lt;script&gt;alert" in page(shop_data, "/events/{}".format(item_id(shop_data, text="payment")))
	assert "&lt;script&gt;alert" in page(shop_data, "/logs")


def test_transaction_waterfall_and_trace(shop_data):
	txn = item_id(shop_data, type="transaction")
	html = page(shop_data, "/events/{}".format(txn))
	rows = re.findall(r'<div class="span-row.*?</div>\s*</div>', html, re.S)
	labels = [re.sub(r"<[^>]+>|\s+", " ", r).split(" ms")[0] for r in rows]
	assert len(rows) == 4
	assert "import orders" in labels[0] and "SELECT * FROM orders" in labels[1] and "json" in labels[3]
	bars = [tuple(float(x) for x in re.search(r"left: ([\d.]+)%; width: ([\d.]+)%", r).groups()) for r in rows]
	assert bars[0] == (0.0, 100.0)
	assert bars[1][0] < bars[2][0]  # the db span starts before the http span
	assert bars[3][0] >= bars[2][0] and bars[3][1] < bars[2][1]  # serialize inside http
	depths = [int(re.search(r"padding-left: (\d+)px", r).group(1)) for r in rows]
	assert depths[0] < depths[1] == depths[2] < depths[3]
	trace_id = shop_data.Collector.Store.get(txn)["trace_id"]
	trace = page(shop_data, "/traces/{}".format(trace_id))
	assert trace.count('class="span-row') == 4
	assert trace_id in page(shop_data, "/traces")
	assert fetch(shop_data.url + "/traces/" + "0" * 32)[0] == 404


def test_logs_table_and_filters(shop_data):
	html = main_part(page(shop_data, "/logs"))
	assert "imported 12 orders" in html and "checksum mismatch in batch b-17" in html
	html = main_part(page(shop_data, "/logs?level=error"))
	assert "checksum mismatch" in html and "imported 12 orders" not in html
	html = main_part(page(shop_data, "/logs?q=imported"))
	assert "imported 12 orders" in html and "checksum" not in html


def test_check_ins_and_attachment_download(shop_data):
	html = main_part(page(shop_data, "/checkins"))
	assert "nightly-import" in html and ">ok<" in html and ">in_progress<" in html
	event = page(shop_data, "/events/{}".format(item_id(shop_data, type="event", text="with attachment")))
	(link,) = re.findall(r'<a href="(/api/0/items/\d+/attachment)" download class="attachment">dump.bin</a>', event)
	status, headers, body = fetch(shop_data.url + link)
	assert status == 200 and body == ATTACHMENT
	assert headers["Content-Disposition"].startswith("attachment;")


def test_filter_bar(shop_data):
	def titles(query):
		html = main_part(page(shop_data, "/?" + urllib.parse.urlencode(query)))
		return sorted(re.findall(r'class="title">([^<]+)</a>', html))

	assert len(titles({})) == 3
	html = main_part(page(shop_data, "/?sort=count"))
	assert re.findall(r'class="title">([^<]+)</a>', html)[0] == "KeyError: &#39;order 5 missing&#39;"
	assert page(shop_data, "/?sort=nonsense")  # ignored, not an error
	assert titles({"level": "warning"}) == [
		"payment provider slow " + HOSTILE.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
	]
	assert titles({"tag": "tenant:acme", "q": "KeyError"}) == ["KeyError: &#39;order 5 missing&#39;"]
	assert titles({"environment": "prod"}) == []
	assert titles({"release": "shop@1.4.2", "since": "15m"}) == titles({})
	assert titles({"since": "2000-01-01"}) == titles({})
	html = page(shop_data, "/?since=yesterday")
	assert '<p class="error">since:' in html and "15m" in html
	html = page(shop_data, "/events?type=transaction")
	assert "import orders" in main_part(html) and "KeyError" not in main_part(html)
	issue = shop_data.Collector.Store.issues(text="KeyError")[0]["id"]
	html = main_part(page(shop_data, "/events?issue={}".format(issue)))
	assert html.count('<tr class="item') == 3


def test_odd_stored_content_never_500(tmp_path):
	bodies = [
		b'{"message":"m","timestamp":1e20}',
		b'{"message":"m","extra":[1,2],"contexts":[1],"breadcrumbs":[{"message":"x"},"y"]}',
		b'{"exception":{"values":[{"type":"T","stacktrace":{"frames":["a",{"lineno":"x","vars":[1]}]},"mechanism":"x"}]}}',
		b'{"message":"m","tags":{"k\\udfff":"v"},"request":"r","user":[1]}',
		b'{"type":"transaction","transaction":"t","start_timestamp":"x","timestamp":NaN,"spans":[1,{"span_id":[1]}]}',
	]
	with start_in_thread(Store(str(tmp_path / "odd.sqlite")), CollectorSettings()) as running:
		for body in bodies:
			envelope = b'{}\n{"type":"event"}\n' + body + b"\n"
			assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200
		for item in running.Collector.Store.list(limit=100):
			status, _, html = fetch(running.url + "/events/{}".format(item["id"]))
			assert status == 200, item
		for path in ("/", "/events", "/events/999999", "/events/x", "/events/-1", "/events/99999999999999999999999"):
			assert fetch(running.url + path)[0] in (200, 404), path


def test_items_kept_as_sent_with_lone_surrogates_never_500(tmp_path):
	"""Item types the collector keeps as sent (not normalized) may carry lone surrogates; their page shows U+FFFD."""
	payload = b'{"release":"\\ud800","environment":"e\\udcff","body":"b\\ud800","status":"ok"}'
	with start_in_thread(Store(str(tmp_path / "odd.sqlite")), CollectorSettings()) as running:
		for kind in ("span", "log", "check_in", "session", "client_report", "weird"):
			envelope = b'{}\n{"type":"%s"}\n' % kind.encode() + payload + b"\n"
			assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200, kind
		items = running.Collector.Store.list(limit=100)
		assert items
		for item in items:
			status, _, html = fetch(running.url + "/events/{}".format(item["id"]))
			assert status == 200, item
			assert "\ufffd" in html.decode("utf-8"), item
			status, _, raw = fetch(running.url + "/events/{}/raw".format(item["id"]))
			assert status == 200, item
			assert json.loads(raw)["payload"]["release"] == "\ufffd", item
		for path in ("/", "/events", "/logs", "/checkins", "/traces"):
			assert fetch(running.url + path)[0] == 200, path


def test_clear_same_origin_only(tmp_path, referee):
	with start_in_thread(Store(str(tmp_path / "clear.sqlite")), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		send_error(running.dsn, "to be cleared")
		assert running.Collector.Store.count(type="event") == 1
		for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
			status, _, _ = fetch(running.url + "/clear", "POST", headers, b"")
			assert status == 403
		assert running.Collector.Store.count(type="event") == 1
		status, headers, _ = fetch(running.url + "/clear", "POST", {"Origin": running.url}, b"")
		assert status == 303 and headers["Location"] == "/"
		assert running.Collector.Store.count() == 0
		assert "No issues" in page(running, "/")


def test_pages_refuse_foreign_host_names(shop):
	"""A page read through another name (DNS rebinding) is refused; ingest is not affected."""
	connection = http.client.HTTPConnection("127.0.0.1", shop.Port, timeout=10)
	connection.request("GET", "/", headers={"Host": "evil.example:{}".format(shop.Port)})
	response = connection.getresponse()
	assert response.status == 421
	response.read()
	connection.request("GET", "/", headers={"Host": "localhost:{}".format(shop.Port)})
	assert connection.getresponse().status == 200
	connection.close()


class SSE:
	"""A minimal server-sent-events reader over a raw socket, in a thread."""

	def __init__(self, running, path="/stream", origin=None):
		self.Events: list[tuple[str, str]] = []
		self.Headers = ""
		self._arrived = threading.Condition()
		self._sock = socket.create_connection(("127.0.0.1", running.Port), timeout=60)
		extra = "Origin: {}\r\n".format(origin) if origin else ""
		self._sock.sendall(
			"GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n{}\r\n".format(
				path, running.Port, extra
			).encode()
		)
		self._thread = threading.Thread(target=self._read, daemon=True)
		self._thread.start()

	def _read(self):
		buffer = b""
		headers_done = False
		try:
			while True:
				chunk = self._sock.recv(65536)
				if not chunk:
					return
				buffer += chunk
				if not headers_done and b"\r\n\r\n" in buffer:
					head, buffer = buffer.split(b"\r\n\r\n", 1)
					self.Headers = head.decode()
					headers_done = True
				# chunked transfer: drop chunk-size lines
				text = re.sub(rb"(?m)^[0-9a-fA-F]+\r\n", b"", buffer)
				while b"\n\n" in text:
					block, text = text.split(b"\n\n", 1)
					self._block(block.decode("utf-8", "replace").replace("\r\n", "\n"))
					buffer = text
		except OSError:
			return

	def _block(self, block):
		name, data = "message", []
		for line in block.split("\n"):
			if line.startswith("event: "):
				name = line[7:]
			elif line.startswith("data: "):
				data.append(line[6:])
		if data:
			with self._arrived:
				self.Events.append((name, "\n".join(data)))
				self._arrived.notify_all()

	def wait(self, predicate, timeout=30):
		"""The first event (name, data) for which ``predicate(name, data)`` holds, waiting for it."""

		def found():
			return next((e for e in self.Events if predicate(*e)), None)

		with self._arrived:
			assert self._arrived.wait_for(found, timeout), self.Events
			return found()

	def close(self):
		self._sock.close()


def test_stream_speaks_spotlights_sidecar_protocol(tmp_path, referee):
	with start_in_thread(Store(str(tmp_path / "live.sqlite")), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		plain = SSE(running)
		encoded = SSE(running, "/stream?base64")
		try:
			send_error(running.dsn, "live one")
			name, data = plain.wait(lambda name, data: "live one" in data)
			assert name == "application/x-sentry-envelope"
			header, item_header, body = data.split("\n")[:3]
			assert json.loads(item_header)["type"] == "event"
			assert json.loads(body)["exception"]["values"][-1]["value"] == "live one"
			binary = b'{}\n{"type":"attachment","length":5,"filename":"b.bin"}\n\x00\xff\n\x80a\n'
			assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, binary)[0] == 200
			name, data = encoded.wait(lambda name, data: b"b.bin" in base64.b64decode(data))
			assert name == "application/x-sentry-envelope;base64"
			assert base64.b64decode(data).endswith(b"\x00\xff\n\x80a\n")
			# A client that connects now first gets the recent envelopes (Spotlight's replay).
			late = SSE(running)
			try:
				late.wait(lambda name, data: "live one" in data)
				late.wait(lambda name, data: "b.bin" in data)
			finally:
				late.close()
		finally:
			plain.close()
			encoded.close()


def test_stream_cors_for_loopback_origins_only(shop):
	for origin, allowed in (
		("http://localhost:5173", True),
		("http://127.0.0.1:3000", True),
		("https://evil.example", False),
	):
		client = SSE(shop, origin=origin)
		try:
			for _ in range(100):
				if client.Headers:
					break
				threading.Event().wait(0.05)
			assert ("Access-Control-Allow-Origin: {}".format(origin) in client.Headers) is allowed, client.Headers
			assert "text/event-stream" in client.Headers
		finally:
			client.close()


@pytest.mark.parametrize(
	"method,path,peer,remote,allowed",
	[
		("GET", "/", "192.0.2.7", False, False),
		("GET", "/stream", "192.0.2.7", False, False),  # the live feed is read access too
		("GET", "/events/1", "192.0.2.7", True, True),
		("POST", "/stream", "192.0.2.7", False, True),  # ingest (Spotlight's sidecar)
		("POST", "/api/1/envelope/", "192.0.2.7", False, True),
		("GET", "/health", "192.0.2.7", False, True),
		("GET", "/", "::ffff:127.0.0.1", False, True),
		("GET", "/", "::1", False, True),
	],
)
@pytest.mark.parametrize("host", ["127.0.0.1:8999", "devbox.example:8999"])
def test_guard_keeps_pages_to_loopback(method, path, peer, remote, allowed, host):
	"""The guard on a request from another machine (which a test on 127.0.0.1 cannot make over a socket)."""
	import asyncio

	from aiohttp.test_utils import make_mocked_request

	from asab_sentry.collector.web import guard

	class Transport:
		def get_extra_info(self, name, default=None):
			return (peer, 40000) if name == "peername" else default

		def is_closing(self):
			return False

	request = make_mocked_request(method, path, headers={"Host": host}, transport=Transport())

	async def handler(request):
		from aiohttp import web

		return web.Response(text="reached")

	response = asyncio.run(guard(remote)(request, handler))
	if host.startswith("devbox") and not remote and allowed and method == "GET" and path == "/":
		allowed = False  # a page reached by a host name that may be rebound: only when remote_read opens it
	assert (response.status == 200) is allowed, (response.status, response.text)


def test_v2_spans_trace_waterfall(tmp_path):
	"""Spans streamed in the v2 format (the JavaScript SDK's default) make a trace waterfall of their own."""
	start = 1_700_000_000.0
	spans = {
		"items": [
			{
				"trace_id": "b" * 32,
				"span_id": "1" * 16,
				"name": "GET /orders <b>",
				"is_segment": True,
				"start_timestamp": start,
				"end_timestamp": start + 1.0,
				"status": "ok",
				"attributes": {"sentry.op": {"type": "string", "value": "http.server"}},
			},
			{
				"trace_id": "b" * 32,
				"span_id": "2" * 16,
				"parent_span_id": "1" * 16,
				"name": "SELECT orders",
				"start_timestamp": start + 0.5,
				"end_timestamp": start + 0.75,
				"status": "error",
				"attributes": {"sentry.op": {"type": "string", "value": "db"}},
			},
		]
	}
	body = json.dumps(spans).encode()
	envelope = (
		b'{}\n{"type":"span","item_count":2,"content_type":"application/vnd.sentry.items.span.v2+json","length":%d}\n%s\n'
		% (
			len(body),
			body,
		)
	)
	with start_in_thread(Store(str(tmp_path / "spans.sqlite")), CollectorSettings()) as running:
		assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200
		assert "b" * 32 in page(running, "/traces")
		html = page(running, "/traces/" + "b" * 32)
		rows = re.findall(r'<div class="span-row.*?</div>\s*</div>', html, re.S)
		assert len(rows) == 2
		assert "GET /orders &lt;b&gt;" in rows[0] and "http.server" in rows[0]
		assert 'class="span-row error"' in rows[1] and "SELECT orders" in rows[1]
		bars = [re.search(r"left: ([\d.]+)%; width: ([\d.]+)%", r).groups() for r in rows]
		assert bars == [("0.0", "100.0"), ("50.0", "25.0")]


def test_event_page_walks_the_events_of_its_issue(shop_data):
	ids = [i["id"] for i in shop_data.Collector.Store.list(type="event", text="KeyError", newest_first=False)]
	assert len(ids) == 3
	middle = page(shop_data, "/events/{}".format(ids[1]))
	assert "event 2 of 3 in this issue" in middle
	assert '<a href="/events/{}" rel="prev">'.format(ids[0]) in middle
	assert '<a href="/events/{}" rel="next">'.format(ids[2]) in middle
	assert 'rel="prev"' not in page(shop_data, "/events/{}".format(ids[0]))


def test_without_jinja2_the_ui_says_so_and_ingest_works(tmp_path, monkeypatch, caplog):
	from asab_sentry.collector import web

	monkeypatch.setattr(web, "jinja2", None)
	with start_in_thread(Store(str(tmp_path / "plain.sqlite")), CollectorSettings()) as running:
		status, _, body = fetch(running.url + "/")
		assert status == 503 and b"pip install 'asab-sentry[collector]'" in body
		envelope = b'{}\n{"type":"event"}\n{"message":"still stored"}\n'
		assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200
	assert "The web UI is off" in caplog.text


def test_sentry_sdk_spotlight_round_trip(tmp_path):
	"""sentry-sdk's own Spotlight integration sends to POST /stream; a GET /stream client (as Spotlight's
	overlay) receives the envelope, and the web UI lists it."""
	import sentry_sdk

	from asab_sentry import _sdk

	with start_in_thread(Store(str(tmp_path / "spotlight.sqlite")), CollectorSettings()) as running:
		client = SSE(running)
		try:
			sentry_sdk.init(spotlight=running.url + "/stream")
			try:
				sentry_sdk.capture_message("through spotlight")
				sentry_sdk.flush(10)
			finally:
				_sdk.reset()
			name, data = client.wait(lambda name, data: "through spotlight" in data)
			assert name == "application/x-sentry-envelope"
		finally:
			client.close()
		assert "through spotlight" in main_part(page(running, "/"))


def test_stream_replay_is_bounded_and_a_stalled_client_loses_envelopes_not_memory(tmp_path, caplog):
	with start_in_thread(Store(str(tmp_path / "slow.sqlite")), CollectorSettings()) as running:
		live = running.Collector.Live
		live.QueueSize = 2
		live.ReplayBytes = 3 * 1024 * 1024
		stalled = socket.create_connection(("127.0.0.1", running.Port), timeout=30)
		stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
		stalled.sendall("GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n".format(running.Port).encode())
		try:
			big = b"x" * (1024 * 1024)
			for _ in range(20):
				envelope = b'{}\n{"type":"attachment","length":%d}\n%s\n' % (len(big), big)
				assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200
			# The stalled reader keeps at most its queue; the rest is counted and said once.
			assert live.Dropped > 0
			assert caplog.text.count("A /stream client is too slow") == 1
			# What is kept for replay stays within its byte budget.
			assert 1 <= len(live._recent) <= 3
		finally:
			stalled.close()


def test_feedback_page(tmp_path, capsys):
	"""User feedback (the JavaScript SDK's captureFeedback) on the event page and in `events show`."""
	from asab_sentry.cli import main

	feedback = {
		"event_id": "f" * 32,
		"timestamp": 1_700_000_000.0,
		"contexts": {
			"feedback": {"message": "The <b>button</b> does nothing", "contact_email": "a@example.com", "name": "Ann"}
		},
	}
	envelope = b'{}\n{"type":"feedback"}\n' + json.dumps(feedback).encode() + b"\n"
	path = str(tmp_path / "feedback.sqlite")
	with start_in_thread(Store(path), CollectorSettings()) as running:
		assert fetch(running.url + "/api/1/envelope/", "POST", AUTH, envelope)[0] == 200
		(item,) = running.Collector.Store.list(type="feedback")
		html = page(running, "/events/{}".format(item["id"]))
		assert "<h3>feedback</h3>" in html and "The &lt;b&gt;button&lt;/b&gt; does nothing" in html
	assert main(["events", "--storage", path, "show", str(item["id"])]) == 0
	out = capsys.readouterr().out
	assert "The <b>button</b> does nothing" in out and "-- Contexts" in out


@pytest.mark.filterwarnings("ignore:Transaction-based profiling:DeprecationWarning")
def test_transaction_page_links_its_profile(tmp_path):
	"""A transaction profile (what sentry-sdk links to a transaction) is listed on the transaction's page."""
	import time

	import sentry_sdk

	from asab_sentry import _sdk

	with start_in_thread(Store(str(tmp_path / "profile.sqlite")), CollectorSettings()) as running:
		sentry_sdk.init(dsn=running.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
		try:
			with sentry_sdk.start_transaction(name="profiled work", op="task"):
				started = time.monotonic()
				while time.monotonic() - started < 0.3:
					sum(range(10000))
			sentry_sdk.flush(10)
		finally:
			_sdk.reset()
		store = running.Collector.Store
		(txn,) = store.list(type="transaction")
		(profile,) = store.list(type="profile")
		html = page(running, "/events/{}".format(txn["id"]))
		assert '<a href="/events/{}">profile of profiled work</a>'.format(profile["id"]) in html
		assert page(running, "/events/{}".format(profile["id"]))
