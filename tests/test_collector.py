"""The local collector: ingest endpoints, encodings, Sentry's answers, hostile bodies, storage, JSON API."""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import brotli
import pytest
from sentry_sdk.envelope import Envelope, Item, PayloadRef

from asab_sentry.collector.envelope import EnvelopeError, parse_envelope
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from helpers import configure, payloads, run_app

AUTH = {"X-Sentry-Auth": "Sentry sentry_version=7, sentry_key=asab-sentry, sentry_client=test/1.0"}


def event_envelope(message="hello", event_id="a" * 32, **extra):
	event = {"event_id": event_id, "message": message, "level": "error", "platform": "python", **extra}
	envelope = Envelope(headers={"event_id": event_id})
	envelope.add_item(Item(payload=PayloadRef(json=event), type="event"))
	return envelope.serialize()


def post(url, body, headers=None, timeout=10):
	request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
	try:
		with urllib.request.urlopen(request, timeout=timeout) as response:
			return response.status, dict(response.headers), json.loads(response.read() or b"null")
	except urllib.error.HTTPError as e:
		return e.code, dict(e.headers), json.loads(e.read() or b"null")


def get(url):
	try:
		with urllib.request.urlopen(url, timeout=10) as response:
			return response.status, json.loads(response.read())
	except urllib.error.HTTPError as e:
		return e.code, json.loads(e.read())


@pytest.fixture
def running(referee):
	with start_in_thread(Store(":memory:"), CollectorSettings()) as collector:
		collector.Collector.Listeners.append(referee.check_collector_envelope)
		yield collector


def envelope_url(running, project="1"):
	return "{}/api/{}/envelope/".format(running.url, project)


def test_envelope_accepted_with_auth_header(running):
	status, _, body = post(envelope_url(running), event_envelope(), AUTH)
	assert status == 200 and body["id"] == "a" * 32
	(item,) = running.Collector.Store.list()
	assert item["type"] == "event" and item["title"] == "hello" and item["level"] == "error"


def test_envelope_accepted_with_sentry_key_query(running):
	status, _, _ = post(envelope_url(running) + "?sentry_key=asab-sentry&sentry_version=7", event_envelope())
	assert status == 200


@pytest.mark.parametrize(
	"url_suffix,headers,status",
	[
		("", {}, 401),
		("?sentry_key=wrong", {}, 403),
		("", {"X-Sentry-Auth": "Sentry sentry_key=wrong"}, 403),
	],
)
def test_authentication(running, url_suffix, headers, status):
	assert post(envelope_url(running) + url_suffix, event_envelope(), headers)[0] == status
	assert running.Collector.Store.count() == 0


def test_wrong_project(running):
	assert post(envelope_url(running, project="2"), event_envelope(), AUTH)[0] == 403


def test_legacy_store_endpoint(running):
	event = {"event_id": "b" * 32, "message": "legacy", "level": "warning"}
	status, _, body = post("{}/api/1/store/".format(running.url), json.dumps(event).encode(), AUTH)
	assert status == 200 and body["id"] == "b" * 32
	(item,) = running.Collector.Store.list()
	assert item["type"] == "event" and item["level"] == "warning"


@pytest.mark.parametrize(
	"encoding,compress",
	[
		("gzip", gzip.compress),
		("deflate", zlib.compress),
		("deflate", lambda b: zlib.compress(b, wbits=-15) if sys.version_info >= (3, 11) else zlib.compress(b)),
		("br", brotli.compress),
	],
)
def test_compressed_bodies(running, encoding, compress):
	body = compress(event_envelope("compressed"))
	status, _, _ = post(envelope_url(running), body, dict(AUTH, **{"Content-Encoding": encoding}))
	assert status == 200
	assert running.Collector.Store.list()[0]["title"] == "compressed"


def test_real_sdk_compresses_and_is_accepted(collector):
	"""sentry-sdk sends brotli (or gzip) bodies through SentryService."""
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		app.SentryService.capture_message("through the sdk " + "x" * 2000)

	run_app(body)
	(event,) = payloads(collector)
	assert event["message"].startswith("through the sdk")


@pytest.mark.parametrize(
	"body,reason",
	[
		(b"", "empty"),
		(b"not json\n", "envelope header is not valid JSON"),
		(b"[1,2]\n", "not a JSON object"),
		(b'{"event_id":"x"}\n{"type":"event","length":100}\n{"a":1}\n', "claims 100 bytes"),
		(b'{"event_id":"x"}\n{"type":"event","length":2}\n{"a":1}\n', "longer than its length"),
		(b'{"event_id":"x"}\n{"type":"event","length":-1}\n', "invalid length"),
		(b'{"event_id":"x"}\n{"type":"event"}\n{"a": \xff}\n', "not valid UTF-8"),
		(b'{"event_id":"x"}\n{"type":"event"}\n{"a": \n', "not valid JSON"),
		(b'{"event_id":"x"}\n{"type":"event"}\n[1]\n', "not a JSON object"),
		(b'{"event_id":"x"}\n{"length":1}\nx\n', "has no type"),
		(b'{"e":"' + b"x" * 70000 + b'"}\n', "longer than"),
		(b"\xff\xfe\n", "not valid UTF-8"),
	],
)
def test_malformed_envelopes_get_400(running, body, reason):
	status, _, answer = post(envelope_url(running), body, AUTH)
	assert status == 400
	assert reason in answer["detail"]
	assert running.Collector.Store.count() == 0


def test_malformed_store_body_gets_400(running):
	assert post("{}/api/1/store/".format(running.url), b"{broken", AUTH)[0] == 400


def test_truncated_and_invalid_compressed_bodies(running):
	whole = gzip.compress(event_envelope())
	assert post(envelope_url(running), whole[: len(whole) // 2], dict(AUTH, **{"Content-Encoding": "gzip"}))[0] == 400
	assert post(envelope_url(running), b"garbage", dict(AUTH, **{"Content-Encoding": "gzip"}))[0] == 400
	assert post(envelope_url(running), b"garbage", dict(AUTH, **{"Content-Encoding": "br"}))[0] == 400
	assert post(envelope_url(running), b"x", dict(AUTH, **{"Content-Encoding": "zstd-ish"}))[0] == 415


def test_size_limits_give_413(referee):
	settings = CollectorSettings(max_envelope_size=10_000, max_decompressed_size=50_000)
	with start_in_thread(Store(":memory:"), settings) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		big = event_envelope("x" * 20_000)
		assert post(envelope_url(running), big, AUTH)[0] == 413
		bomb = gzip.compress(b"{}\n" + b" " * 5_000_000)
		assert len(bomb) < 10_000
		assert post(envelope_url(running), bomb, dict(AUTH, **{"Content-Encoding": "gzip"}))[0] == 413
		br_bomb = brotli.compress(b"{}\n" + b" " * 5_000_000)
		assert post(envelope_url(running), br_bomb, dict(AUTH, **{"Content-Encoding": "br"}))[0] == 413
		assert running.Collector.Store.count() == 0
		assert post(envelope_url(running), event_envelope("small"), AUTH)[0] == 200


def test_rate_limit_gives_429_with_retry_after(referee):
	with start_in_thread(Store(":memory:"), CollectorSettings(rate_limit=2, rate_window=30)) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		assert post(envelope_url(running), event_envelope(), AUTH)[0] == 200
		assert post(envelope_url(running), event_envelope(), AUTH)[0] == 200
		status, headers, _ = post(envelope_url(running), event_envelope(), AUTH)
		assert status == 429
		assert 1 <= int(headers["Retry-After"]) <= 30
		assert headers["X-Sentry-Rate-Limits"].endswith("::organization")
		assert running.Collector.Store.count() == 2


def test_sdk_honours_the_rate_limit(referee):
	with start_in_thread(Store(":memory:"), CollectorSettings(rate_limit=1, rate_window=60)) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		configure({"sentry": {"data_source_name": running.dsn}})

		async def body(app):
			import sentry_sdk

			app.SentryService.capture_message("first")
			await app.Loop.run_in_executor(None, sentry_sdk.flush, 5)
			app.SentryService.capture_message("second")
			app.SentryService.capture_message("third")

		run_app(body)
		import sentry_sdk

		sentry_sdk.flush(5)
		assert running.Collector.Store.count(type="event") == 1
		# The client stopped sending after the 429: at most the requests already in flight when it came
		# ([sentry] max_concurrent_requests, 4) were rejected; they wait for the window's end, not resent now.
		assert running.Collector.Rejected <= 4
		from asab_sentry import _sdk

		_sdk.reset()


def test_spotlight_stream_needs_no_auth(running):
	status, _, _ = post(
		running.url + "/stream", event_envelope("spotlit"), {"Content-Type": "application/x-sentry-envelope"}
	)
	assert status == 200
	assert running.Collector.Store.list()[0]["title"] == "spotlit"


def test_huge_headers_are_rejected_not_crashing(running):
	with socket.create_connection(("127.0.0.1", running.Port), timeout=10) as s:
		s.sendall(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
		answer = s.recv(100)
	assert answer.split(b" ")[1] == b"400"
	assert post(envelope_url(running), event_envelope("still alive"), AUTH)[0] == 200


def test_wrong_content_length_does_not_hang(running):
	with socket.create_connection(("127.0.0.1", running.Port), timeout=10) as s:
		body = event_envelope()
		s.sendall(
			b"POST /api/1/envelope/?sentry_key=asab-sentry HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n" + body
		)
		answer = s.recv(200)
	assert answer.split(b" ")[1] == b"400"


def test_body_shorter_than_content_length_does_not_hang(running):
	with socket.create_connection(("127.0.0.1", running.Port), timeout=10) as s:
		s.sendall(
			b"POST /api/1/envelope/?sentry_key=asab-sentry HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{}\n"
		)
		s.shutdown(socket.SHUT_WR)
		answer = s.recv(200)
	assert answer == b"" or answer.split(b" ")[1] == b"400"
	assert post(envelope_url(running), event_envelope("still alive"), AUTH)[0] == 200
	assert running.Collector.Store.count() == 1


def test_parse_envelope_with_items_without_length():
	parsed = parse_envelope(b'{"event_id":"1"}\n{"type":"attachment"}\nhello\n{"type":"event"}\n{"message":"m"}\n')
	assert [i.type for i in parsed.items] == ["attachment", "event"]
	assert parsed.items[0].payload == b"hello" and parsed.items[1].json == {"message": "m"}
	with pytest.raises(EnvelopeError):
		parse_envelope(b"")


def test_json_api_list_filters_and_get(running):
	post(envelope_url(running), event_envelope("first error", event_id="1" * 32, tags={"tenant": "acme"}), AUTH)
	post(envelope_url(running), event_envelope("second one", event_id="2" * 32, level="warning", release="r2"), AUTH)
	status, body = get(running.url + "/api/0/items?type=event")
	assert status == 200 and body["count"] == 2
	assert get(running.url + "/api/0/items?level=warning")[1]["items"][0]["title"] == "second one"
	assert get(running.url + "/api/0/items?tag=tenant:acme")[1]["items"][0]["event_id"] == "1" * 32
	assert get(running.url + "/api/0/items?q=second")[1]["count"] == 1
	assert get(running.url + "/api/0/items?release=r2")[1]["count"] == 1
	assert get(running.url + "/api/0/items?since={}".format(time.time() + 60))[1]["count"] == 0
	assert get(running.url + "/api/0/items?until={}".format(time.time() + 60))[1]["count"] == 2
	page = get(running.url + "/api/0/items?limit=1&offset=1&order=asc")[1]["items"]
	assert [i["title"] for i in page] == ["second one"]
	item_id = page[0]["id"]
	status, item = get("{}/api/0/items/{}".format(running.url, item_id))
	assert (
		status == 200
		and item["payload"]["logentry"]["formatted"] == "second one"
		and item["item_header"]["type"] == "event"
	)
	assert get(running.url + "/api/0/items/999")[0] == 404
	assert get(running.url + "/api/0/items/abc")[0] == 400
	assert get(running.url + "/api/0/items?tag=novalue")[0] == 400
	assert get(running.url + "/api/0/items?limit=many")[0] == 400
	assert get(running.url + "/health")[1]["items"] == 2


def test_store_retention(tmp_path):
	store = Store(str(tmp_path / "r.sqlite"), max_count=3)
	envelope = parse_envelope(event_envelope())
	for _ in range(5):
		store.add(envelope, "1")
	store.apply_retention()
	assert store.count() == 3
	aged = Store(str(tmp_path / "a.sqlite"), max_age=60)
	aged.add(envelope, "1", received=time.time() - 120)
	aged.add(envelope, "1")
	aged.apply_retention()
	(kept,) = aged.list()
	assert kept["received"] > time.time() - 60


def free_port():
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def start_collector_process(tmp_path, *args):
	port = free_port()
	storage = tmp_path / "collector.sqlite"
	process = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli", "collector", "--port", str(port), "--storage", str(storage), *args],
		stdout=subprocess.PIPE,
		stderr=subprocess.STDOUT,
	)
	deadline = time.time() + 30
	while time.time() < deadline:
		try:
			if get("http://127.0.0.1:{}/health".format(port))[0] == 200:
				return process, port, storage
		except OSError:
			time.sleep(0.1)
	process.kill()
	raise AssertionError("collector did not start: " + process.stdout.read().decode())


def test_answered_items_survive_kill_9(tmp_path, referee):
	process, port, storage = start_collector_process(tmp_path)
	try:
		url = "http://127.0.0.1:{}/api/1/envelope/".format(port)
		for n in range(50):
			status, _, _ = post(url, event_envelope("durable {}".format(n), event_id="{:032x}".format(n)), AUTH)
			assert status == 200
	finally:
		os.kill(process.pid, signal.SIGKILL)
		process.wait(timeout=10)
	store = Store(str(storage))
	assert store.count(type="event") == 50
	titles = {i["title"] for i in store.list(limit=100)}
	assert titles == {"durable {}".format(n) for n in range(50)}


def listening_addresses(port):
	"""Local addresses listening on ``port``, from the kernel's socket table (IPv4 and IPv6)."""
	found = []
	for table in ("/proc/net/tcp", "/proc/net/tcp6"):
		with open(table) as f:
			for line in f.readlines()[1:]:
				fields = line.split()
				address, hex_port = fields[1].split(":")
				if fields[3] == "0A" and int(hex_port, 16) == port:
					found.append(address)
	return found


def test_collector_command_is_loopback_only_by_default(tmp_path):
	process, port, _ = start_collector_process(tmp_path, "--rate-limit", "5")
	try:
		assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, nothing else
	finally:
		process.send_signal(signal.SIGINT)
		out, _ = process.communicate(timeout=30)
	assert process.returncode == 0, out.decode()
	assert b"Collector listening" in out


def test_collector_command_says_malformed_requests_in_one_line(tmp_path):
	"""aiohttp's parser errors (400 to the client) are one warning on the console, not a traceback each."""
	process, port, _ = start_collector_process(tmp_path)
	try:
		for head in (
			b"Content-Length: -5\r\n",
			b"Transfer-Encoding: chunked\r\n",
			b"X-Big: " + b"a" * 100000 + b"\r\n",
		):
			with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
				s.sendall(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: x\r\n" + head + b"\r\nzz\r\n\r\n")
				assert s.recv(100).startswith(b"HTTP/1.0 400"), head[:20]
	finally:
		process.send_signal(signal.SIGINT)
		out, _ = process.communicate(timeout=30)
	out = out.decode()
	assert "Traceback" not in out, out
	assert out.count("Malformed request from 127.0.0.1") == 3, out


def test_collector_configured_by_an_asab_config_file(tmp_path, referee):
	port = free_port()
	config = tmp_path / "collector.conf"
	config.write_text(
		"[collector]\nlisten=127.0.0.1 {}\nstorage={}\nproject_id=7\nkey=secret-key  # the DSN's key\n"
		"max_envelope_size=5000\n".format(port, tmp_path / "c.sqlite")
	)
	process = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli", "collector", "-c", str(config), "--rate-limit", "4"],
		stdout=subprocess.PIPE,
		stderr=subprocess.STDOUT,
	)
	try:
		url = "http://127.0.0.1:{}".format(port)
		for _ in range(300):
			try:
				get(url + "/health")
				break
			except OSError:
				time.sleep(0.1)
		headers = {"X-Sentry-Auth": "Sentry sentry_key=secret-key"}
		assert post(url + "/api/7/envelope/", event_envelope(), headers)[0] == 200
		assert post(url + "/api/1/envelope/", event_envelope(), headers)[0] == 403
		assert post(url + "/api/7/envelope/", event_envelope(), AUTH)[0] == 403
		assert post(url + "/api/7/envelope/", event_envelope("x" * 6000), headers)[0] == 413
		# the flag wins over the file: the 5th authenticated request in the window is over --rate-limit 4
		assert [post(url + "/api/7/envelope/", event_envelope(), headers)[0] for _ in range(3)] == [200, 200, 429]
	finally:
		process.send_signal(signal.SIGINT)
		out, _ = process.communicate(timeout=30)
	assert "http://secret-key@127.0.0.1:{}/7".format(port).encode() in out


def test_collector_rejects_bad_options_in_one_line(tmp_path):
	out = subprocess.run(
		[
			sys.executable,
			"-m",
			"asab_sentry.cli",
			"collector",
			"--port",
			str(free_port()),
			"--storage",
			str(tmp_path / "x.sqlite"),
			"--rate-window",
			"often",
		],
		capture_output=True,
		text=True,
		timeout=60,
	)
	assert out.returncode == 2
	assert (
		out.stderr.strip().splitlines()[-1]
		== "[collector] rate_window = 'often': expected a duration such as 5s, 500ms, 2m or a number of seconds"
	)
