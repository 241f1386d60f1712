"""delivery/http.py: the senders' minimal HTTP/1.1 client against raw servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading

import pytest

from asab_sentry.delivery.http import Connection


class RawServer:
	"""Answers each request on a connection with the next canned response; closes after ``close_after``."""

	def __init__(self, responses: list[bytes], close_after: int = 10**6):
		self.Responses = list(responses)
		self.CloseAfter = close_after
		self.Connections = 0
		self.Requests: list[bytes] = []
		self.Socket = socket.socket()
		self.Socket.bind(("127.0.0.1", 0))
		self.Socket.listen(8)
		self.Url = "http://127.0.0.1:{}/api/1/envelope/".format(self.Socket.getsockname()[1])
		threading.Thread(target=self._serve, daemon=True).start()

	def _serve(self):
		while True:
			try:
				conn, _ = self.Socket.accept()
			except OSError:
				return
			self.Connections += 1
			f = conn.makefile("rb")
			for _ in range(self.CloseAfter):
				head = b""
				while not head.endswith(b"\r\n\r\n"):
					line = f.readline()
					if not line:
						break
					head += line
				if not head:
					break
				length = int(
					[h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1]
				)
				self.Requests.append(head + f.read(length))
				if not self.Responses:
					break
				conn.sendall(self.Responses.pop(0))
			f.close()
			conn.close()

	def close(self):
		self.Socket.close()


@pytest.fixture
def raw():
	servers = []

	def make(*args, **kwargs):
		servers.append(RawServer(*args, **kwargs))
		return servers[-1]

	yield make
	for s in servers:
		s.close()


def test_request_in_one_piece_with_headers(raw):
	server = raw([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Sentry-Rate-Limits: 60::org\r\n\r\n{}"])
	response = Connection(server.Url, 5).post({"X-Sentry-Auth": "Sentry sentry_key=k"}, b"body")
	assert response == (200, {"content-length": "2", "x-sentry-rate-limits": "60::org"}, b"{}")
	(request,) = server.Requests
	assert request.startswith(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: 127.0.0.1:")
	assert b"X-Sentry-Auth: Sentry sentry_key=k\r\n" in request and request.endswith(b"\r\n\r\nbody")


def test_kept_alive_then_reconnects_when_the_server_closed_it(raw):
	ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	server = raw([ok, ok, ok], close_after=1)
	connection = Connection(server.Url, 5)
	assert [connection.post({}, b"x").status for _ in range(3)] == [200, 200, 200]
	assert server.Connections == 3  # the server closed each after one request: the client reconnected


def test_one_connection_for_many_requests(raw):
	ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	server = raw([ok] * 5)
	connection = Connection(server.Url, 5)
	assert [connection.post({}, b"x").status for _ in range(5)] == [200] * 5
	assert server.Connections == 1


def test_interim_1xx_responses_are_skipped(raw):
	"""100 Continue / 103 Early Hints before the final response (RFC 9110 §15.2): the final one counts, and the
	responses of a pipeline stay matched to their requests."""
	interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
	server = raw([interim + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr%d" % i for i in range(4)])
	connection = Connection(server.Url, 5)
	assert [(r.status, r.body) for r in connection.post_many({}, [b"a", b"b", b"c"])] == [
		(200, b"r0"),
		(200, b"r1"),
		(200, b"r2"),
	]
	assert connection.post({}, b"d")[::2] == (200, b"r3")


def test_chunked_and_close_delimited_bodies(raw):
	server = raw(
		[
			b"HTTP/1.1 413 Too Large\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntoo \r\n5\r\nlarge\r\n0\r\n\r\n",
			b"HTTP/1.1 400 Bad\r\nConnection: close\r\n\r\nbad envelope",
		],
		close_after=2,
	)
	connection = Connection(server.Url, 5)
	assert connection.post({}, b"x")[::2] == (413, b"too large")
	assert connection.post({}, b"x")[::2] == (400, b"bad envelope")


def test_refused_and_malformed_raise(raw):
	server = raw([b"garbage\r\n\r\n"])
	with pytest.raises(ValueError):
		Connection(server.Url, 5).post({}, b"x")
	server.close()
	with pytest.raises(OSError):
		Connection(server.Url, 5).post({}, b"x")


def test_https_with_certificate_verification(tmp_path):
	"""Sentry is HTTPS: the connection verifies the certificate against the CA given (certifi's by default)."""
	import http.server
	import shutil
	import ssl
	import subprocess

	if shutil.which("openssl") is None:
		pytest.skip("openssl command not installed")
	cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
	command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
	command += " -addext subjectAltName=IP:127.0.0.1"
	subprocess.run([*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)

	class Handler(http.server.BaseHTTPRequestHandler):
		protocol_version = "HTTP/1.1"

		def do_POST(self):
			self.rfile.read(int(self.headers["Content-Length"]))
			self.send_response(200)
			self.send_header("Content-Length", "2")
			self.end_headers()
			self.wfile.write(b"{}")

		def log_message(self, *args):
			pass

	server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
	server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
	server_context.load_cert_chain(str(cert), str(key))
	server.socket = server_context.wrap_socket(server.socket, server_side=True)
	threading.Thread(target=server.serve_forever, daemon=True).start()
	url = "https://127.0.0.1:{}/api/1/envelope/".format(server.server_address[1])
	try:
		trusting = ssl.create_default_context(cafile=str(cert))
		connection = Connection(url, 5, trusting)
		assert [connection.post({}, b"x").status for _ in range(2)] == [200, 200]
		connection.close()
		with pytest.raises(ssl.SSLError):  # the default CAs do not know this certificate
			Connection(url, 5).post({}, b"x")
	finally:
		server.shutdown()
		server.server_close()
