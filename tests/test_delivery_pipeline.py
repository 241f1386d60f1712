"""
Pipelined delivery: several envelopes written at once on a sender's kept-alive connection, the responses read in
order, against raw HTTP servers on 127.0.0.1 that close connections in the middle of a pipeline.
Nothing may be lost, and nothing the server answered may be sent twice.
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
import socket
import threading
import time

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope

from asab_sentry.delivery import DeliveryOptions, DeliveryTransport
from asab_sentry.delivery import transport as transport_module
from asab_sentry.delivery.http import Connection


class PipelineServer:
	"""
	An envelope endpoint that reads requests off each connection as they come and answers each with 200, except
	that it closes a connection after ``answer`` responses: with ``Connection: close`` on the last one (``polite``)
	or just by closing it, and (``read_ahead``) only after it has read every request the client had written,
	answered or not. It records the event ids of the envelopes it answered and of those it read but did not.
	"""

	def __init__(
		self,
		answer: int = 10**6,
		polite: bool = True,
		read_ahead: bool = False,
		fail: int = 0,
		fail_status: int = 503,
		stall_at: int | None = None,
		stall: float = 0.0,
	):
		self.Answer = answer
		self.Polite = polite
		self.ReadAhead = read_ahead
		self.Fail = fail  # the first ``fail`` requests are answered with ``fail_status`` (not recorded as answered)
		self.FailStatus = fail_status
		self.StallAt = stall_at  # before the response to this request (0-based, over all connections): wait ``stall`` s
		self.Stall = stall
		self.Failed: list[str] = []
		self._seen = 0
		self._released = threading.Event()  # close() ends a stall
		self.Answered: list[str] = []
		self.Unanswered: list[str] = []
		self.Connections = 0
		self.Requests: list[dict[str, str]] = []  # the headers of each request
		self.Socket = socket.socket()
		self.Socket.bind(("127.0.0.1", 0))
		self.Socket.listen(16)
		self.Dsn = "http://key@127.0.0.1:{}/1".format(self.Socket.getsockname()[1])
		self._lock = threading.Lock()
		self._open: set[socket.socket] = set()
		self._closed = False
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self) -> None:
		while True:
			try:
				conn, _ = self.Socket.accept()
			except OSError:
				return
			with self._lock:
				if self._closed:
					conn.close()
					return
				self.Connections += 1
				self._open.add(conn)
			threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

	def _request(self, f) -> tuple[dict[str, str], bytes] | None:
		line = f.readline()
		if not line:
			return None
		headers = {}
		while True:
			line = f.readline()
			if line in (b"\r\n", b""):
				break
			name, _, value = line.decode("latin-1").partition(":")
			headers[name.strip().lower()] = value.strip()
		body = f.read(int(headers["content-length"]))
		if headers.get("content-encoding") == "gzip":
			body = gzip.decompress(body)
		return headers, body

	def _serve(self, conn: socket.socket) -> None:
		f = conn.makefile("rb")
		answered = 0
		try:
			while True:
				request = self._request(f)
				if request is None:
					return
				headers, body = request
				event_id = Envelope.deserialize(body).headers.get("event_id")
				with self._lock:
					self.Requests.append(headers)
				with self._lock:
					seen, self._seen = self._seen, self._seen + 1
				if seen == self.StallAt:
					self._released.wait(self.Stall)
				if seen < self.Fail:
					with self._lock:
						self.Failed.append(event_id)
					retry = b"Retry-After: 1\r\n" if self.FailStatus == 429 else b""
					conn.sendall(b"HTTP/1.1 %d Failed\r\n%sContent-Length: 0\r\n\r\n" % (self.FailStatus, retry))
					continue
				if answered >= self.Answer:
					with self._lock:
						self.Unanswered.append(event_id)
					if self.ReadAhead:
						conn.settimeout(0.2)  # read what else the client wrote, answer none of it
						continue
					return
				answered += 1
				last = answered == self.Answer and self.Polite
				with self._lock:
					self.Answered.append(event_id)
				conn.sendall(
					b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					+ (b"Connection: close\r\n" if last else b"")
					+ b'Content-Length: 9\r\n\r\n{"id":""}'
				)
				if last:
					return
		except OSError:
			return
		finally:
			f.close()
			conn.close()
			with self._lock:
				self._open.discard(conn)

	def close(self) -> None:
		# Stop accepting (shutdown wakes the accepting thread) and cut the open connections: a later test's server
		# may get the same port, and must not share it with this one.
		self._released.set()
		with self._lock:
			self._closed = True
			connections = list(self._open)
		for sock in [self.Socket, *connections]:
			try:
				sock.shutdown(socket.SHUT_RDWR)
			except OSError:
				pass
		self.Socket.close()


@pytest.fixture
def pipeline_server():
	servers: list[PipelineServer] = []

	def make(**kwargs) -> PipelineServer:
		servers.append(PipelineServer(**kwargs))
		return servers[-1]

	yield make
	sentry_sdk.get_client().close(timeout=0.5)
	for s in servers:
		s.close()


def start(dsn: str, **options) -> DeliveryTransport:
	transport = DeliveryTransport({"dsn": dsn, "send_client_reports": False}, DeliveryOptions(**options))
	sentry_sdk.init(dsn=dsn, transport=transport, default_integrations=False)
	return transport


def burst(n: int) -> list[str]:
	"""Capture ``n`` messages at once; their event ids."""
	return [sentry_sdk.capture_message("m{}".format(i)) for i in range(n)]


def test_post_many_pipelines_in_one_connection_and_reads_the_responses_in_order(pipeline_server):
	server = pipeline_server()
	bodies = [Envelope(headers={"event_id": "e{}".format(i)}).serialize() for i in range(5)]
	bodies[2] = gzip.compress(bodies[2])
	connection = Connection(server.Dsn.replace("key@", "") + "/api/1/envelope/", 5)
	responses = connection.post_many({"X-Sentry-Auth": "Sentry sentry_key=key"}, bodies)
	assert [r.status for r in responses] == [200] * 5
	assert server.Answered == ["e{}".format(i) for i in range(5)]
	assert server.Connections == 1
	# A gzip member goes with Content-Encoding: gzip, the others without.
	assert [h.get("content-encoding") for h in server.Requests] == [None, None, "gzip", None, None]
	assert all(h["x-sentry-auth"] == "Sentry sentry_key=key" for h in server.Requests)
	connection.close()


@pytest.mark.parametrize("polite", [True, False], ids=["connection-close", "dropped"])
def test_post_many_returns_the_responses_before_the_server_closed(pipeline_server, polite):
	server = pipeline_server(answer=2, polite=polite)
	bodies = [Envelope(headers={"event_id": "e{}".format(i)}).serialize() for i in range(5)]
	connection = Connection(server.Dsn.replace("key@", "") + "/api/1/envelope/", 5)
	responses = connection.post_many({}, bodies)
	assert [r.status for r in responses] == [200, 200]
	assert server.Answered == ["e0", "e1"]
	# The rest again, on a new connection (the old one is closed).
	responses = connection.post_many({}, bodies[2:])
	assert [r.status for r in responses] == [200, 200]
	assert server.Connections == 2
	connection.close()


@pytest.mark.parametrize(
	"options",
	[
		{"answer": 3, "polite": True},
		{"answer": 3, "polite": False},
		{"answer": 3, "polite": False, "read_ahead": True},
	],
	ids=["connection-close", "dropped", "read-then-dropped"],
)
def test_a_server_closing_mid_pipeline_loses_nothing_and_gets_nothing_twice(pipeline_server, options):
	server = pipeline_server(**options)
	transport = start(server.Dsn, max_concurrent_requests=1)
	ids = burst(40)
	assert transport.pending() > 0
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert sorted(server.Answered) == sorted(ids), (
		dict(transport.Losses.Counters),
		len(server.Answered),
		server.Unanswered,
		server.Connections,
	)  # every one delivered, none answered twice
	counts = collections.Counter(server.Answered)
	assert max(counts.values()) == 1
	assert transport.Losses.Counters.get("sent") == 40
	assert not {k: v for k, v in transport.Losses.Counters.items() if k.startswith("dropped_")}
	# What the server read but did not answer was sent again; after the first such close, one request per
	# connection exchange (the endpoint does not take pipelines): the server saw at most a pipeline's worth more.
	assert set(server.Unanswered) <= set(ids)
	assert server.Connections >= 40 // 3


def test_envelopes_go_pipelined_to_a_server_that_takes_them(pipeline_server, monkeypatch):
	# Several envelopes per write: count the requests that arrive per connection exchange.
	server = pipeline_server()
	writes = []
	post_many = Connection.post_many

	def counting(self, headers, bodies, *args):
		writes.append(len(bodies))
		return post_many(self, headers, bodies, *args)

	monkeypatch.setattr(Connection, "post_many", counting)
	transport = start(server.Dsn, max_concurrent_requests=1)
	ids = burst(200)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert sorted(server.Answered) == sorted(ids)
	assert sum(writes) == 200
	assert max(writes) > 1  # pipelined
	assert max(writes) <= transport_module.PIPELINE_MAX
	assert server.Connections == 1


def test_small_envelopes_go_uncompressed_large_ones_gzipped(pipeline_server):
	server = pipeline_server()
	transport = start(server.Dsn)
	small = sentry_sdk.capture_message("small")
	# Tags, not one long message: older sentry-sdk (2.27) cuts strings at 1024 characters.
	tags = {"t{}".format(i): "x" * 150 for i in range(transport_module.COMPRESS_MIN // 100)}
	large = sentry_sdk.capture_message("large", tags=tags)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert sorted(server.Answered) == sorted([small, large])
	encodings = {h.get("content-encoding") for h in server.Requests}
	assert encodings == {None, "gzip"}


def test_request_body_threshold():
	small = b"{}\n" + b"x" * (transport_module.COMPRESS_MIN - 4)
	assert transport_module.request_body(small, 6) is small
	large = small + b"xxxxxxxx"
	body = transport_module.request_body(large, 6)
	assert body[:2] == b"\x1f\x8b" and gzip.decompress(body) == large


def test_a_steady_flow_is_sent_in_batches_not_one_wake_per_envelope(pipeline_server, monkeypatch):
	# Envelopes arriving one by one (as a web service's transactions do): the sender gathers them.
	server = pipeline_server()
	writes = []
	post_many = Connection.post_many

	def counting(self, headers, bodies, *args):
		writes.append(len(bodies))
		return post_many(self, headers, bodies, *args)

	monkeypatch.setattr(Connection, "post_many", counting)
	transport = start(server.Dsn, max_concurrent_requests=2)
	ids = []
	for _ in range(100):
		ids.append(sentry_sdk.capture_message("one"))
		time.sleep(0.0005)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert sorted(server.Answered) == sorted(ids)
	assert len(writes) < 100  # fewer writes than envelopes


def counting_writes(monkeypatch) -> list[int]:
	"""The number of requests of each pipeline (each `Connection.post_many` call) from now on."""
	writes: list[int] = []
	post_many = Connection.post_many

	def counting(self, headers, bodies, *args):
		writes.append(len(bodies))
		return post_many(self, headers, bodies, *args)

	monkeypatch.setattr(Connection, "post_many", counting)
	return writes


def wait_for(condition, timeout: float = 30.0) -> bool:
	deadline = time.monotonic() + timeout
	while not condition():
		if time.monotonic() > deadline:
			return False
		time.sleep(0.02)
	return True


@pytest.mark.parametrize("polite", [True, False], ids=["connection-close", "dropped"])
def test_a_keep_alive_request_limit_does_not_stop_pipelining(pipeline_server, monkeypatch, polite):
	# nginx (keepalive_requests) and Apache (MaxKeepAliveRequests) close a connection after so many requests: the
	# rest of the pipeline goes again on a new connection, still pipelined.
	server = pipeline_server(answer=10, polite=polite)
	writes = counting_writes(monkeypatch)
	transport = start(server.Dsn, max_concurrent_requests=1)
	ids = burst(300)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert sorted(server.Answered) == sorted(ids) and max(collections.Counter(server.Answered).values()) == 1
	assert server.Connections >= 30
	# One request per write from the first close on would be ~290 writes; pipelined, each new connection takes 10.
	assert len(writes) <= 2 * server.Connections, writes
	assert max(writes[5:]) > 1, writes


def test_a_server_taking_one_request_per_connection_gets_one_at_a_time_then_pipelining_is_tried_again(
	pipeline_server, monkeypatch
):
	monkeypatch.setattr(transport_module, "PIPELINING_RETRY", 1.0)
	server = pipeline_server(answer=1)  # HTTP/1.0-like, gunicorn's sync workers: one request per connection
	writes = counting_writes(monkeypatch)
	transport = start(server.Dsn, max_concurrent_requests=1)
	ids = burst(20)
	sentry_sdk.flush(timeout=30)
	assert sorted(server.Answered) == sorted(ids)
	assert writes[0] > 1 and set(writes[1:]) == {1}, writes  # after the first close: one at a time
	# The endpoint takes pipelines again (a new deployment): after PIPELINING_RETRY the sender tries again.
	server.Answer = 10**6
	time.sleep(1.2)
	del writes[:]
	ids = burst(50)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert set(ids) <= set(server.Answered)
	assert max(writes) > 1, writes


def test_a_timeout_in_the_middle_of_a_pipeline_backs_off_and_keeps_pipelining(pipeline_server, monkeypatch, caplog):
	caplog.set_level(logging.INFO, logger="asab_sentry")
	server = pipeline_server(stall_at=3, stall=3.0)  # one slow response, longer than request_timeout
	writes = counting_writes(monkeypatch)
	transport = start(server.Dsn, max_concurrent_requests=1, request_timeout=1.0, retry_initial=0.2)
	ids = burst(20)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert set(ids) <= set(server.Answered)
	# A failure: counted as retried, and said once (the back-off), not re-sent at once as after a close.
	assert transport.Losses.Counters["retried"] >= 16, dict(transport.Losses.Counters)
	said = [r.getMessage() for r in caplog.records if "retrying with back-off" in r.getMessage()]
	assert len(said) == 1 and "TimeoutError" in said[0], said
	assert writes[0] > 1 and max(writes[1:]) > 1, writes  # the unanswered ones went pipelined again
	del writes[:]
	ids = burst(40)
	sentry_sdk.flush(timeout=30)
	assert set(ids) <= set(server.Answered)
	assert max(writes) > 1, writes


def test_what_a_server_accepted_is_settled_before_it_stops_answering(pipeline_server, tmp_path):
	# The server answers 30 requests of the pipeline, then hangs: those 30 are delivered (counted, their outbox
	# files deleted) at once, not when the rest is answered or times out.
	server = pipeline_server(stall_at=30, stall=60.0)
	outbox = tmp_path / "outbox"
	transport = start(server.Dsn, max_concurrent_requests=1, request_timeout=60.0, outbox=str(outbox))
	ids = burst(100)
	assert wait_for(lambda: len(server.Answered) == 30 and transport.Losses.Counters["sent"] == 30, timeout=20), (
		len(server.Answered),
		dict(transport.Losses.Counters),
	)
	assert server.Answered == ids[:30]
	assert wait_for(lambda: len([n for n in os.listdir(outbox) if not n.startswith(".")]) == 70, timeout=20)
	assert transport.pending() == 70
	transport.kill()


@pytest.mark.parametrize("status", [503, 429])
def test_a_pipeline_answered_with_failures_goes_again_in_its_order(pipeline_server, status):
	server = pipeline_server(fail=10, fail_status=status)
	transport = start(server.Dsn, max_concurrent_requests=1, retry_initial=0.1)
	ids = burst(10)
	sentry_sdk.flush(timeout=30)
	assert transport.pending() == 0
	assert server.Failed == ids
	assert server.Answered == ids  # the oldest first, as captured
