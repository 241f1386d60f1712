"""The collector over HTTP: the default DSN, CORS, hostile requests get 4xx, the JSON API of issues, logs,
traces, check-ins and attachments fed by the real sentry-sdk, connection timeouts, the batched writer."""

import concurrent.futures
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aiohttp.test_utils
import pytest
import sentry_sdk
import sentry_sdk.consts
import sentry_sdk.crons
import sentry_sdk.logger

from asab_sentry import _sdk
from asab_sentry.collector.server import DEFAULT_KEY, CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from helpers import configure, run_app

AUTH = {"X-Sentry-Auth": "Sentry sentry_version=7, sentry_key={}, sentry_client=test/1.0".format(DEFAULT_KEY)}


def request(url, body=None, method=None, headers=None, timeout=10):
	req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
	try:
		with urllib.request.urlopen(req, timeout=timeout) as response:
			return response.status, dict(response.headers), response.read()
	except urllib.error.HTTPError as e:
		return e.code, dict(e.headers), e.read()


def get_json(url):
	status, _, body = request(url)
	return status, json.loads(body)


def envelope(event, event_id="a" * 32):
	payload = json.dumps(dict({"event_id": event_id}, **event)).encode()
	return b'{"event_id":"%s"}\n{"type":"event","length":%d}\n%s\n' % (event_id.encode(), len(payload), payload)


@pytest.fixture
def hostile():
	"""A collector for content that is invalid on purpose (no Relay referee)."""
	with start_in_thread(Store(":memory:"), CollectorSettings()) as running:
		yield running


def sdk_init(dsn, **options):
	_sdk.reset()
	sentry_sdk.init(dsn=dsn, default_integrations=False, **options)


def test_the_default_dsn_key_is_word_characters_and_the_old_one_still_works(collector):
	assert re.fullmatch(r"\w+", DEFAULT_KEY)  # the JavaScript SDK's DSN pattern
	assert collector.dsn == "http://{}@127.0.0.1:{}/1".format(DEFAULT_KEY, collector.Port)
	url = collector.url + "/api/1/envelope/"
	assert request(url + "?sentry_key=" + DEFAULT_KEY, envelope({"message": "new"}))[0] == 200
	assert request(url + "?sentry_key=asab-sentry", envelope({"message": "old"}))[0] == 200
	with start_in_thread(Store(":memory:"), CollectorSettings(key="custom")) as other:
		assert request(other.url + "/api/1/envelope/?sentry_key=asab-sentry", envelope({"message": "x"}))[0] == 403


def test_cors_for_browser_sdks(collector):
	url = collector.url + "/api/1/envelope/?sentry_key={}&sentry_version=7".format(DEFAULT_KEY)
	status, headers, _ = request(
		url,
		method="OPTIONS",
		headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
	)
	assert status == 204
	assert headers["Access-Control-Allow-Origin"] == "*"
	assert "POST" in headers["Access-Control-Allow-Methods"]
	assert "content-type" in headers["Access-Control-Allow-Headers"].lower()
	status, headers, _ = request(url, envelope({"message": "from a browser"}), headers={"Content-Type": "text/plain"})
	assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
	status, headers, _ = request(url, b"garbage", headers={"Origin": "http://localhost:3000"})
	assert status == 400 and headers["Access-Control-Allow-Origin"] == "*"  # the browser may read the reason
	assert "Access-Control-Allow-Origin" not in request(collector.url + "/api/0/items")[1]


DEEP = b"[" * 100000 + b"]" * 100000


@pytest.mark.parametrize(
	"method,path,body,reason",
	[
		("POST", "/api/1/envelope/", b'{}\n{"type":"event"}\n{"extra":' + DEEP + b"}\n", "nested too deeply"),
		("POST", "/api/1/envelope/", b'{"x":' + b"[" * 30000 + b"]" * 30000 + b'}\n{"type":"event"}\n{}\n', "nested"),
		("POST", "/api/1/store/", b'{"extra":' + DEEP + b"}", "nested too deeply"),
		("GET", "/api/0/items?offset=" + "9" * 25, None, "offset"),
		("GET", "/api/0/items/" + "9" * 25, None, "item id"),
		("GET", "/api/0/items?limit=-1", None, "limit"),
		("GET", "/api/0/items?since=yesterday", None, "since"),
		("GET", "/api/0/items?order=sideways", None, "order"),
		("GET", "/api/0/items?issue=x", None, "issue"),
		("GET", "/api/0/issues?sort=random", None, "sort"),
		("GET", "/api/0/issues?tag=novalue", None, "tag"),
		("GET", "/api/0/issues/" + "9" * 25, None, "issue id"),
		("GET", "/api/0/logs?attribute=x", None, "attribute"),
		("GET", "/api/0/logs?until=never", None, "until"),
		("GET", "/api/0/traces?limit=lots", None, "limit"),
		("GET", "/api/0/items/x/attachment", None, "item id"),
	],
)
def test_malformed_requests_get_400_with_a_reason(hostile, method, path, body, reason):
	status, _, answer = request(hostile.url + path, body, method=method, headers=AUTH)
	assert status == 400
	assert reason in json.loads(answer)["detail"]
	assert hostile.Collector.Store.count() == 0


@pytest.mark.parametrize(
	"event,title,level",
	[
		({"message": "bad \ud800 title"}, "bad \ufffd title", "error"),
		({"message": "m", "level": {"a": 1}}, "m", "error"),
		({"message": "m", "release": [1], "environment": {"x": 1}}, "m", "error"),
		({"exception": {"values": [{"type": {"a": 1}, "value": "v"}]}}, None, "error"),
		({"message": "m", "event_id": {"not": "an id"}, "level": "WARN"}, "m", "warning"),
	],
)
def test_unusual_content_is_stored_readably(hostile, event, title, level):
	status, _, _ = request(hostile.url + "/api/1/envelope/", envelope(event), headers=AUTH)
	assert status == 200
	(item,) = get_json(hostile.url + "/api/0/items")[1]["items"]
	assert item["level"] == level
	if title is not None:
		assert item["title"] == title
	assert get_json(hostile.url + "/api/0/items/{}".format(item["id"]))[0] == 200


def test_issues_api_and_items_of_an_issue(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "release": "shop@1"}})

	def lookup(orders, key):
		return orders[key]

	async def body(app):
		for n in range(5):
			try:
				lookup({}, "order-{}".format(n))
			except KeyError as e:
				app.SentryService.capture_exception(e)
		app.SentryService.capture_message("inventory low")

	run_app(body)
	sentry_sdk.flush(5)
	status, answer = get_json(collector.url + "/api/0/issues")
	assert status == 200
	by_title = {i["title"].split(":")[0]: i for i in answer["issues"]}
	key_errors = by_title["KeyError"]
	assert key_errors["count"] == 5 and key_errors["releases"] == ["shop@1"]
	assert key_errors["grouping"][:2] == ["exception", "KeyError"] and key_errors["grouping"][3] == "lookup"
	assert key_errors["culprit"].endswith("in lookup")
	assert by_title["inventory low"]["count"] == 1
	assert [i["title"] for i in get_json(collector.url + "/api/0/issues?q=inventory")[1]["issues"]] == ["inventory low"]
	assert get_json(collector.url + "/api/0/issues?release=other")[1]["count"] == 0
	assert get_json(collector.url + "/api/0/issues?since=15m")[1]["count"] == 2
	status, issue = get_json(collector.url + "/api/0/issues/{}".format(key_errors["id"]))
	assert status == 200 and len(issue["events"]) == 5 and issue["events"][0]["id"] == issue["latest_item_id"]
	items = get_json(collector.url + "/api/0/items?issue={}".format(key_errors["id"]))[1]
	assert items["count"] == 5
	assert get_json(collector.url + "/api/0/issues/999")[0] == 404


def test_attachments_download_as_the_exact_bytes(collector):
	sdk_init(collector.dsn)
	binary = bytes(range(256)) * 4 + b"\r\n\x00end"
	with sentry_sdk.new_scope() as scope:
		scope.add_attachment(bytes=binary, filename="core dump.bin", content_type="application/octet-stream")
		scope.add_attachment(bytes=b"plain text", filename="notes.txt", content_type="text/plain")
		sentry_sdk.capture_message("with attachments")
	sentry_sdk.flush(5)
	(event,) = get_json(collector.url + "/api/0/items?type=event")[1]["items"]
	status, full = get_json(collector.url + "/api/0/items/{}".format(event["id"]))
	linked = {i["title"]: i for i in full["linked"]}
	assert set(linked) == {"core dump.bin", "notes.txt"}
	status, headers, data = request(collector.url + "/api/0/items/{}/attachment".format(linked["core dump.bin"]["id"]))
	assert status == 200 and data == binary
	assert headers["Content-Type"] == "application/octet-stream"
	assert 'filename="core dump.bin"' in headers["Content-Disposition"]
	assert request(collector.url + "/api/0/items/{}/attachment".format(linked["notes.txt"]["id"]))[2] == b"plain text"
	assert request(collector.url + "/api/0/items/9999/attachment")[0] == 404


def test_logs_check_ins_and_sessions_from_sentry_sdk(collector):
	logs = (
		{"enable_logs": True}
		if "enable_logs" in sentry_sdk.consts.DEFAULT_OPTIONS
		else {"_experiments": {"enable_logs": True}}
	)
	sdk_init(collector.dsn, release="svc@4", environment="staging", **logs)
	sentry_sdk.logger.warning("cache miss for order {order_id}", order_id=7)
	sentry_sdk.logger.error("payment declined")
	sentry_sdk.crons.capture_checkin(monitor_slug="nightly-import", status="ok", duration=2.5)
	sentry_sdk.get_isolation_scope().start_session()
	sentry_sdk.get_isolation_scope().end_session()
	sentry_sdk.flush(5)
	deadline = time.monotonic() + 10
	while time.monotonic() < deadline and len(get_json(collector.url + "/api/0/logs")[1]["logs"]) < 2:
		sentry_sdk.flush(1)
		time.sleep(0.05)
	records = get_json(collector.url + "/api/0/logs?order=asc")[1]["logs"]
	assert [(r["level"], r["body"]) for r in records] == [
		("warning", "cache miss for order 7"),
		("error", "payment declined"),
	]
	# sentry.message.parameter.order_id (sentry-sdk 2.28+), sentry.message.parameters.order_id (before)
	(parameter,) = [k for k in records[0]["attributes"] if k.startswith("sentry.message.parameter")]
	assert records[0]["attributes"][parameter] == 7
	assert (records[0]["release"], records[0]["environment"]) == ("svc@4", "staging")
	assert [r["body"] for r in get_json(collector.url + "/api/0/logs?level=error")[1]["logs"]] == ["payment declined"]
	assert [r["body"] for r in get_json(collector.url + "/api/0/logs?attribute={}:7".format(parameter))[1]["logs"]] == [
		"cache miss for order 7"
	]
	assert get_json(collector.url + "/api/0/logs?q=PAYMENT")[1]["count"] == 1
	(check_in,) = get_json(collector.url + "/api/0/check-ins")[1]["check_ins"]
	assert (check_in["monitor_slug"], check_in["status"], check_in["duration"]) == ("nightly-import", "ok", 2.5)
	assert (check_in["release"], check_in["environment"]) == ("svc@4", "staging")
	summary = get_json(collector.url + "/api/0/summary")[1]
	assert sum(summary["sessions"]["by_status"].values()) + sum(summary["sessions"]["aggregates"].values()) >= 1
	assert summary["sessions"]["releases"] == ["svc@4"]


def test_transactions_are_traces(collector):
	sdk_init(collector.dsn, traces_sample_rate=1.0)
	with sentry_sdk.start_transaction(op="task", name="import orders") as transaction:
		with sentry_sdk.start_span(op="db", name="select orders"):
			pass
		trace_id = transaction.trace_id
		sentry_sdk.capture_message("inside")
	sentry_sdk.flush(5)
	(listed,) = get_json(collector.url + "/api/0/traces")[1]["traces"]
	assert listed["trace_id"] == trace_id and listed["name"] == "import orders" and listed["error_count"] == 1
	status, trace = get_json(collector.url + "/api/0/traces/" + trace_id)
	assert [s["name"] for s in trace["spans"]] == ["import orders", "select orders"]
	assert get_json(collector.url + "/api/0/traces/" + "0" * 32)[0] == 404


def test_clear_deletes_everything(collector):
	request(collector.url + "/api/1/envelope/", envelope({"message": "m"}), headers=AUTH)
	assert request(collector.url + "/api/0/items", method="DELETE")[0] == 200
	assert get_json(collector.url + "/health")[1]["items"] == 0


@pytest.mark.parametrize(
	"peer,path,allowed",
	[
		(("127.0.0.1", 5000), "/api/0/items", True),
		(("::1", 5000, 0, 0), "/api/0/issues", True),
		(("::ffff:127.0.0.1", 5000, 0, 0), "/", True),
		(("192.0.2.7", 5000), "/api/0/items", False),
		(("192.0.2.7", 5000), "/", False),
		(("192.0.2.7", 5000), "/api/1/envelope/", True),
		(("192.0.2.7", 5000), "/health", True),
	],
)
@pytest.mark.asyncio
async def test_the_read_api_answers_loopback_only_by_default(peer, path, allowed):
	from asab_sentry.collector.server import Collector

	class Transport:
		def get_extra_info(self, name, default=None):
			return peer if name == "peername" else default

	async def handler(request):
		return aiohttp.web.Response(text="ok")

	for remote_read in (False, True):
		collector = Collector(Store(":memory:"), CollectorSettings(remote_read=remote_read))
		req = aiohttp.test_utils.make_mocked_request("GET", path, transport=Transport())
		response = await collector._read_access(req, handler)
		assert (response.status == 200) is (allowed or remote_read)


def test_stalled_and_idle_connections_are_closed():
	with start_in_thread(Store(":memory:"), CollectorSettings(idle_timeout=1.0)) as running:
		sockets = []
		try:
			for n in range(400):
				s = socket.create_connection(("127.0.0.1", running.Port), timeout=30)
				if n % 2:
					s.sendall(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never end
				sockets.append(s)
			deadline = time.monotonic() + 60
			closed = 0
			for s in sockets:
				s.settimeout(max(deadline - time.monotonic(), 0.1))
				try:
					closed += s.recv(100) == b""
				except (ConnectionResetError, TimeoutError):
					pass
			assert closed == 400
			# the collector still serves
			status, _, _ = request(running.url + "/api/1/envelope/", envelope({"message": "after"}), headers=AUTH)
			assert status == 200
		finally:
			for s in sockets:
				s.close()


def test_a_body_that_does_not_arrive_gets_408():
	with start_in_thread(Store(":memory:"), CollectorSettings(body_timeout=1.0, idle_timeout=30)) as running:
		with socket.create_connection(("127.0.0.1", running.Port), timeout=30) as s:
			s.sendall(
				b"POST /api/1/envelope/?sentry_key=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}\n"
				% DEFAULT_KEY.encode()
			)
			answer = b""
			while True:
				chunk = s.recv(4096)
				answer += chunk
				if not chunk or answer.endswith(b"}"):
					break
		assert answer.split(b" ")[1] == b"408"
		assert b"did not arrive" in answer


def test_concurrent_clients_are_all_stored_and_a_bad_envelope_spoils_nothing():
	with start_in_thread(Store(":memory:"), CollectorSettings()) as running:
		url = running.url + "/api/1/envelope/"

		def client(n):
			statuses = []
			for m in range(40):
				body = envelope({"message": "c{} m{}".format(n, m)}, event_id="{:032x}".format(n * 1000 + m))
				if m == 20:
					body = b'{}\n{"type":"event","length":5}\n{"a":\n'
				statuses.append(request(url, body, headers=AUTH)[0])
			return statuses

		with concurrent.futures.ThreadPoolExecutor(8) as pool:
			results = list(pool.map(client, range(8)))
		assert all(r.count(200) == 39 and r[20] == 400 for r in results)
		assert running.Collector.Store.count() == 8 * 39
		assert len(running.Collector.Store.issues(limit=1000)) == 8 * 39


def test_listen_with_a_port_alone_stays_on_loopback(tmp_path):
	from test_collector import free_port, listening_addresses

	port = free_port()
	config = tmp_path / "c.conf"
	config.write_text("[collector]\nlisten={}\nstorage={}\n".format(port, tmp_path / "c.sqlite"))
	process = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli", "collector", "-c", str(config)],
		stdout=subprocess.PIPE,
		stderr=subprocess.STDOUT,
	)
	try:
		deadline = time.monotonic() + 30
		while time.monotonic() < deadline and not listening_addresses(port):
			time.sleep(0.1)
		assert listening_addresses(port) == ["0100007F"]
	finally:
		process.terminate()
		process.communicate(timeout=30)


def test_an_item_as_sent_and_as_stored(hostile):
	body = envelope({"message": "m", "breadcrumbs": [{"message": "b", "timestamp": "1718020000"}]})
	request(hostile.url + "/api/1/envelope/", body, headers=AUTH)
	(item,) = get_json(hostile.url + "/api/0/items")[1]["items"]
	stored = get_json(hostile.url + "/api/0/items/{}".format(item["id"]))[1]["payload"]
	sent = get_json(hostile.url + "/api/0/items/{}?sent=1".format(item["id"]))[1]["payload"]
	assert stored["breadcrumbs"]["values"][0]["timestamp"] == 1718020000.0
	assert sent["breadcrumbs"] == [{"message": "b", "timestamp": "1718020000"}]


ODD_VALUES = [None, True, -1, 1e308, "x", "", [], [None], {}, {"values": "x"}, {"items": [1, None, "s", {"a": []}]}]
ODD_FIELDS = (
	"timestamp start_timestamp end_timestamp level release environment event_id exception breadcrumbs threads "
	"tags contexts fingerprint logentry message spans items attributes attrs status duration monitor_slug "
	"check_in_id transaction aggregates discarded_events trace_id span_id parent_span_id body name"
).split()
ITEM_TYPES = (
	"event transaction feedback log otel_log span check_in session sessions client_report user_report "
	"profile profile_chunk replay_event attachment statsd"
).split()


@pytest.mark.parametrize("item_type", ITEM_TYPES)
def test_odd_shapes_of_every_item_type_never_break_the_collector(hostile, item_type):
	"""Every field the collector reads, with every JSON type: 200 or 400, and every read API still answers."""

	def item(payload):
		return b'{"type":"%s","length":%d}\n%s\n' % (item_type.encode(), len(payload), payload)

	header = b'{"event_id":"%s","trace":{"release":[]}}\n' % (b"a" * 32)
	bodies = [header + item(json.dumps(value).encode()) for value in ODD_VALUES]
	fields = []
	for field in ODD_FIELDS:
		for value in ODD_VALUES:
			fields.append(item(json.dumps({field: value, "contexts": {"trace": {field: value}}}).encode()))
			fields.append(
				item(json.dumps({"items": [{field: value}], "exception": {"values": [{field: value}]}}).encode())
			)
	bodies.append(header + b"".join(fields))  # all in one envelope
	for body in bodies:
		status, _, answer = request(hostile.url + "/api/1/envelope/", body, headers=AUTH)
		assert status in (200, 400), (body[:300], answer)
	assert hostile.Collector.Store.count() >= len(fields)
	for path in (
		"/api/0/items?limit=1000",
		"/api/0/issues",
		"/api/0/logs",
		"/api/0/traces",
		"/api/0/check-ins",
		"/api/0/summary",
	):
		assert get_json(hostile.url + path)[0] == 200, path
	store = hostile.Collector.Store
	for n, item in enumerate(store.list(limit=10_000)):
		assert store.get(item["id"]) is not None and store.attachment(item["id"]) is not None
		if n % 50 == 0:  # and over HTTP, for a sample
			assert get_json(hostile.url + "/api/0/items/{}".format(item["id"]))[0] == 200
			assert request(hostile.url + "/api/0/items/{}/attachment".format(item["id"]))[0] == 200
	for trace in get_json(hostile.url + "/api/0/traces?limit=1000")[1]["traces"]:
		status = request(hostile.url + "/api/0/traces/" + urllib.parse.quote(trace["trace_id"], safe=""))[0]
		assert status == 200 or (status == 404 and "/" in trace["trace_id"]), trace


@pytest.mark.filterwarnings("ignore:Transaction-based profiling is deprecated:DeprecationWarning")
def test_a_profile_belongs_to_its_transaction(collector):
	sdk_init(collector.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
	with sentry_sdk.start_transaction(op="task", name="busy"):
		deadline = time.monotonic() + 0.3
		while time.monotonic() < deadline:  # the profiler samples at 101 Hz and keeps profiles of 2+ samples
			sum(range(1000))
	sentry_sdk.flush(5)
	(transaction,) = get_json(collector.url + "/api/0/items?type=transaction")[1]["items"]
	linked = get_json(collector.url + "/api/0/items/{}".format(transaction["id"]))[1]["linked"]
	assert [(i["type"], i["title"]) for i in linked] == [("profile", "profile of busy")]


def test_without_sentry_relay_the_fallback_normalizes(monkeypatch):
	"""sentry-relay is optional (the collector extra): without it the built-in fallback stores the same shape."""
	from asab_sentry.collector import normalize

	monkeypatch.setattr(normalize, "StoreNormalizer", None)
	assert not normalize.has_relay()
	with start_in_thread(Store(":memory:"), CollectorSettings()) as running:
		assert not running.Collector.Store.Normalizer.UsesRelay
		body = envelope({"message": "m", "level": "WARN", "breadcrumbs": [{"message": "b", "timestamp": "1"}]})
		assert request(running.url + "/api/1/envelope/", body, headers=AUTH)[0] == 200
		(item,) = running.Collector.Store.list()
		event = running.Collector.Store.get(item["id"])["payload"]
		assert event["breadcrumbs"] == {"values": [{"message": "b", "timestamp": 1.0}]}
		assert event["level"] == "warning" and event["logentry"] == {"formatted": "m"} and item["title"] == "m"


def test_the_collector_command_closes_stalled_connections(tmp_path):
	from test_collector import free_port

	port = free_port()
	config = tmp_path / "c.conf"
	config.write_text(
		"[collector]\nlisten=127.0.0.1 {}\nstorage={}\nidle_timeout=1s\n".format(port, tmp_path / "c.sqlite")
	)
	process = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli", "collector", "-c", str(config)],
		stdout=subprocess.PIPE,
		stderr=subprocess.STDOUT,
	)
	sockets = []
	try:
		deadline = time.monotonic() + 30
		while time.monotonic() < deadline:
			try:
				if get_json("http://127.0.0.1:{}/health".format(port))[0] == 200:
					break
			except OSError:
				time.sleep(0.1)
		for _ in range(100):
			s = socket.create_connection(("127.0.0.1", port), timeout=30)
			s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the headers never end
			sockets.append(s)
		closed = 0
		for s in sockets:
			try:
				closed += s.recv(100) == b""
			except (ConnectionResetError, TimeoutError):
				pass
		assert closed == 100
	finally:
		for s in sockets:
			s.close()
		process.terminate()
		process.communicate(timeout=30)
