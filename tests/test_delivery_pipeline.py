"""
Pipelined delivery: several envelopes written at once on a sender's kept-alive connection, the responses read in
order, against raw HTTP servers on 127.0.0.1 that close connections in the middle of a pipeline.
Nothing may be lost, and nothing the server answered may be sent twice.
"""

from __future__ import annotations

import collections
import gzip
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

	def __init__(self, answer: int = 10**6, polite: bool = True, read_ahead: bool = False):
		self.Answer = answer
		self.Polite = polite
		self.ReadAhead = read_ahead
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
	large = sentry_sdk.capture_message("large " + "x" * transport_module.COMPRESS_MIN)
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
