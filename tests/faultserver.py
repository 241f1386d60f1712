"""
A Sentry envelope endpoint on 127.0.0.1 whose behaviour a test switches: answer, fail with a status, be slow,
rate-limit, or be down (connections refused) and come back on the same port.

Used by tests/test_delivery*.py and by benchmarks/faults.py (the figures of docs/delivery.md).
"""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import time
import typing

from sentry_sdk.envelope import Envelope

Behaviour = typing.Callable[["Request"], tuple[int, dict[str, str]]]


class Request:
	"""One request as the server saw it."""

	def __init__(self, at: float, envelope: Envelope | None, status: int = 0):
		self.At = at
		self.Envelope = envelope
		self.Status = status

	@property
	def categories(self) -> set[str]:
		return {i.data_category for i in self.Envelope.items} if self.Envelope else set()


class FaultServer:
	"""
	Attributes:
		Status / Headers: the answer (default 200, no headers) unless ``Behaviour`` is set.
		Behaviour: ``f(request) -> (status, headers)`` deciding each answer.
		Delay: seconds to wait before answering.
		Requests: every request (time, envelope, status answered).
		Accepted: envelopes answered with 2xx.
	"""

	def __init__(self, delay: float = 0.0):
		self.Status = 200
		self.Headers: dict[str, str] = {}
		self.Behaviour: Behaviour | None = None
		self.Delay = delay
		self.Requests: list[Request] = []
		self.Accepted: list[Envelope] = []
		#: Every request's body, decompressed, as it came.
		self.Bodies: list[bytes] = []
		self._lock = threading.Condition()
		self._connections: set[socket.socket] = set()
		self._server: http.server.ThreadingHTTPServer | None = None
		self.Port = 0
		self.up()

	@property
	def dsn(self) -> str:
		return "http://key@127.0.0.1:{}/1".format(self.Port)

	# Switching

	def up(self) -> None:
		server = _Server(self, ("127.0.0.1", self.Port))
		self.Port = server.server_address[1]
		self._server = server
		threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

	def down(self) -> None:
		"""Stop listening and cut every open connection: clients get connection errors."""
		server, self._server = self._server, None
		if server is None:
			return
		server.shutdown()
		server.server_close()
		with self._lock:
			for conn in list(self._connections):
				try:
					conn.shutdown(socket.SHUT_RDWR)
				except OSError:
					pass

	def close(self) -> None:
		self.down()

	# Results

	def events(self) -> list[dict]:
		"""Payloads of the accepted error/message events."""
		with self._lock:
			return [json.loads(i.get_bytes()) for e in self.Accepted for i in e.items if i.type == "event"]

	def client_reports(self) -> list[dict]:
		with self._lock:
			return [json.loads(i.get_bytes()) for e in self.Accepted for i in e.items if i.type == "client_report"]

	def wait_events(self, count: int, timeout: float = 30.0) -> list[dict]:
		deadline = time.monotonic() + timeout
		with self._lock:
			while len(self.events()) < count and time.monotonic() < deadline:
				self._lock.wait(0.05)
		return self.events()

	def _answer(self, body: bytes, encoding: str | None) -> tuple[int, dict[str, str]]:
		if encoding == "gzip":
			body = gzip.decompress(body)
		elif encoding == "br":  # sentry-sdk's HttpTransport compresses with brotli when it is installed
			import brotli

			body = brotli.decompress(body)
		with self._lock:
			self.Bodies.append(body)
		envelope = Envelope.deserialize(body)
		request = Request(time.monotonic(), envelope)
		if self.Delay:
			time.sleep(self.Delay)
		status, headers = self.Behaviour(request) if self.Behaviour else (self.Status, dict(self.Headers))
		request.Status = status
		with self._lock:
			self.Requests.append(request)
			if 200 <= status < 300:
				self.Accepted.append(envelope)
			self._lock.notify_all()
		return status, headers


class _Server(http.server.ThreadingHTTPServer):
	daemon_threads = True
	allow_reuse_address = True
	request_queue_size = 128

	def __init__(self, owner: FaultServer, address):
		self.Owner = owner
		super().__init__(address, _Handler)

	def handle_error(self, request, client_address):
		pass  # a connection cut by down() or by a client's timeout is part of the scenario


class _Handler(http.server.BaseHTTPRequestHandler):
	protocol_version = "HTTP/1.1"
	disable_nagle_algorithm = True

	def setup(self):
		super().setup()
		owner = self.server.Owner  # type: ignore[attr-defined]
		with owner._lock:
			owner._connections.add(self.connection)

	def finish(self):
		owner = self.server.Owner  # type: ignore[attr-defined]
		with owner._lock:
			owner._connections.discard(self.connection)
		try:
			super().finish()
		except OSError:
			pass

	def do_POST(self):
		body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
		status, headers = self.server.Owner._answer(body, self.headers.get("Content-Encoding"))  # type: ignore[attr-defined]
		reply = b'{"id":"0"}' if status < 300 else b'{"detail":"fault injected"}'
		self.send_response(status)
		for key, value in headers.items():
			self.send_header(key, value)
		self.send_header("Content-Type", "application/json")
		self.send_header("Content-Length", str(len(reply)))
		self.end_headers()
		self.wfile.write(reply)

	def log_message(self, format, *args):
		pass
