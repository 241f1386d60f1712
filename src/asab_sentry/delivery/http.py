"""
HTTP for the senders: one kept-alive connection per sender thread.

Direct connections (the usual case) use `Connection`, a minimal HTTP/1.1 client for exactly one request
shape: a POST with a known body, answered with a status, headers and a small body. It sends the request in
one write and parses only the status line and headers the delivery reads; per request it costs a fraction of
urllib3/http.client (their header parsing through `email` dominated the measured profile and capped the
throughput at ~1300 envelopes/s). Several envelopes can go pipelined (`Connection.post_many`): all requests in
one write, then the responses in order, so that a sender thread releases the interpreter lock a few times per
batch rather than several times per envelope. When the environment sets a proxy, `ProxyConnection` (urllib3)
is used (one request at a time).
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import time
import typing
import urllib.parse
import urllib.request

import urllib3

#: The first bytes of a gzip member (RFC 1952): such a body is sent with ``Content-Encoding: gzip``.
GZIP_MAGIC = b"\x1f\x8b"


class Response(typing.NamedTuple):
	status: int
	headers: dict[str, str]  # lower-case names
	body: bytes


#: ``on_responses(start, responses)`` of `Connection.post_many`: the responses to the bodies from index ``start``.
OnResponses = typing.Callable[[int, list["Response"]], None]


class Connection:
	"""A kept-alive HTTP/1.1 (or HTTPS) connection to the envelope endpoint; not thread-safe: one per sender."""

	def __init__(self, url: str, timeout: float, ssl_context: ssl.SSLContext | None = None):
		parts = urllib.parse.urlsplit(url)
		self.Host = parts.hostname or ""
		self.Tls = parts.scheme == "https"
		self.Port = parts.port or (443 if self.Tls else 80)
		self.Path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
		self.Timeout = timeout
		self._context = ssl_context if ssl_context is not None else (_default_context() if self.Tls else None)
		host_header = self.Host if parts.port is None else "{}:{}".format(self.Host, parts.port)
		self._head = "POST {} HTTP/1.1\r\nHost: {}\r\n".format(self.Path, host_header).encode("ascii")
		self._sock: socket.socket | None = None
		self._file: _Reader | None = None
		self.Answered = 0
		self.Interrupted: Exception | None = None

	def post(self, headers: dict[str, str], body: bytes) -> Response:
		"""POST ``body`` (a gzip member with ``Content-Encoding: gzip``); raises OSError (connection, timeout) or ValueError (a malformed response)."""
		return self.post_many(headers, [body])[0]

	def post_many(
		self,
		headers: dict[str, str],
		bodies: typing.Sequence[bytes],
		wait: float = 0.0,
		on_responses: OnResponses | None = None,
	) -> list[Response]:
		"""
		POST each of ``bodies`` (at least one; a gzip member is sent with ``Content-Encoding: gzip``), pipelined: the requests go out in one write, the responses are read
		in order (HTTP/1.1 servers answer pipelined requests in the order received, RFC 9112 9.3.2).

		Returns the responses received, in order: all of them, or fewer when the server closed the connection
		after answering some (``Connection: close``, or it dropped it): the bodies without a response must be sent
		again (a server closing a connection does not process what it did not answer; Sentry also deduplicates
		envelopes by event id). Raises OSError (connection, timeout) or ValueError (a malformed response) when not
		even the first request was answered.

		``wait``: seconds to sleep between writing the requests and reading the responses, so that the responses
		of a pipeline, which a server writes one by one, are read together (one read, one wake-up of this thread,
		instead of one per few responses).

		``on_responses(start, responses)``: called with the responses read so far and not yet passed (``start``:
		the index of the first), before each read that would wait for the network and at the end, so that what
		the server answered is acted on even when it then stops answering (a hang until the timeout). Every
		response returned has been passed to it.

		After it returns, `Interrupted` says why there are fewer responses than bodies: the exception that ended
		the reading (a `ConnectionError` when the server closed or dropped the connection, `TimeoutError`, a
		`ValueError` for a malformed response), or None (the server said ``Connection: close``). `Answered`: the
		responses read on the connection (a new connection starts at 0).
		"""
		head = self._head + "".join("{}: {}\r\n".format(k, v) for k, v in headers.items()).encode("latin-1")
		parts = []
		for body in bodies:
			parts.append(head)
			if body[:2] == GZIP_MAGIC:
				parts.append(b"Content-Encoding: gzip\r\n")
			parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
			parts.append(body)
		requests = b"".join(parts)
		reused = self._sock is not None
		try:
			return self._exchange(requests, len(bodies), wait, on_responses)
		except (ConnectionError, EmptyResponse):
			if not reused:
				raise
			# The server closed the idle kept-alive connection before reading these requests: a new one, once.
			self.close()
			return self._exchange(requests, len(bodies), wait, on_responses)

	def _exchange(
		self, requests: bytes, n: int, wait: float = 0.0, on_responses: OnResponses | None = None
	) -> list[Response]:
		if self._sock is None:
			self._connect()
		assert self._sock is not None and self._file is not None
		self.Interrupted = None
		responses: list[Response] = []
		passed = 0  # responses passed to on_responses
		broken = False
		try:
			try:
				self._sock.sendall(requests)
			except OSError as e:
				broken = True
				self.Interrupted = e
				# The server may have answered the first requests and closed the connection (it takes no more):
				# read what it answered (nothing answered: the read raises).
				if n == 1:
					raise
				self._sock.settimeout(min(self.Timeout, 1.0))
			if wait > 0:
				time.sleep(wait)
			for _ in range(n):
				if on_responses is not None and passed < len(responses) and not self._buffered():
					start, passed = passed, len(responses)
					on_responses(start, responses[start:])
				response = self._read(self._file)
				responses.append(response)
				self.Answered += 1
				if response.headers.get("connection", "").lower() == "close":
					break
		except Exception as e:
			self.close()
			if not responses:
				raise
			if self.Interrupted is None:
				self.Interrupted = e
		except BaseException:
			self.close()
			raise
		else:
			if broken or len(responses) < n or responses[-1].headers.get("connection", "").lower() == "close":
				self.close()
		if on_responses is not None and passed < len(responses):
			on_responses(passed, responses[passed:])
		return responses

	def _buffered(self) -> bool:
		"""Whether some of the next response has arrived already: reading it does not wait for the network."""
		assert self._file is not None
		return self._file.Consumed < self._file.raw.Received  # type: ignore[attr-defined]

	def _connect(self) -> None:
		sock = socket.create_connection((self.Host, self.Port), timeout=self.Timeout)
		try:
			sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
			sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
			if self._context is not None:
				sock = self._context.wrap_socket(sock, server_hostname=self.Host)
		except BaseException:
			sock.close()
			raise
		self._sock = sock
		self._file = _Reader(_CountingSocketIO(sock, "rb"), 65536)  # the responses of a whole pipeline
		self.Answered = 0

	def _read(self, f: _Reader) -> Response:
		"""The next final response: interim 1xx responses (100 Continue, 103 Early Hints) are skipped, as RFC 9110
		§15.2 asks of a client even when it did not expect them (taken as final, every later response of a
		pipeline would be matched to the wrong envelope)."""
		for _ in range(100):
			response = self._read_one(f)
			if not (100 <= response.status < 200) or response.status == 101:
				return response
		raise ValueError("too many interim (1xx) responses")

	def _read_one(self, f: _Reader) -> Response:
		line = f.readline(65537)
		if not line:
			raise EmptyResponse("connection closed before a response")
		parts = line.split(None, 2)
		if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
			raise ValueError("malformed status line {!r}".format(line[:100]))
		status = int(parts[1])
		headers: dict[str, str] = {}
		for _ in range(200):
			line = f.readline(65537)
			if line in (b"\r\n", b"\n", b""):
				break
			name, _, value = line.decode("latin-1").partition(":")
			headers[name.strip().lower()] = value.strip()
		else:
			raise ValueError("too many response headers")
		if headers.get("transfer-encoding", "").lower() == "chunked":
			body = _read_chunked(f)
		elif "content-length" in headers:
			body = f.read(int(headers["content-length"]))
		elif status in (204, 304) or 100 <= status < 200:
			body = b""
		else:
			body = f.read()
			headers["connection"] = "close"
		return Response(status, headers, body)

	def close(self) -> None:
		for closable in (self._file, self._sock):
			if closable is not None:
				try:
					closable.close()
				except OSError:
					pass
		self._file = None
		self._sock = None


class _CountingSocketIO(socket.SocketIO):
	"""The socket's reading end (what ``socket.makefile`` makes), counting the bytes received."""

	Received = 0

	def readinto(self, b: typing.Any) -> int | None:
		n = super().readinto(b)
		if n:
			self.Received += n
		return n


class _Reader(io.BufferedReader):
	"""The buffered responses, counting the bytes read out of the buffer: what is left is ``raw.Received - Consumed``."""

	Consumed = 0

	def readline(self, size: int | None = -1) -> bytes:
		line = super().readline(size)
		self.Consumed += len(line)
		return line

	def read(self, size: int | None = -1) -> bytes:
		data = super().read(size)
		self.Consumed += len(data)
		return data


class EmptyResponse(ConnectionError):
	"""The server closed the connection without answering."""


def _read_chunked(f: _Reader) -> bytes:
	out = []
	while True:
		size = int(f.readline(1024).split(b";")[0].strip() or b"0", 16)
		if size == 0:
			while f.readline(65537) not in (b"\r\n", b"\n", b""):
				pass
			return b"".join(out)
		out.append(f.read(size))
		f.readline(3)


def _default_context() -> ssl.SSLContext:
	context = ssl.create_default_context()
	cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
	if cafile is None:
		try:
			import certifi

			cafile = certifi.where()
		except ImportError:
			pass
	if cafile:
		context.load_verify_locations(cafile)
	return context


class ProxyConnection:
	"""The same interface through urllib3's ProxyManager (the environment's ``http(s)_proxy``)."""

	def __init__(self, url: str, proxy: str, timeout: float):
		self.Url = url
		self.Answered = 0  # responses read (urllib3 keeps the connections: never reset)
		self.Interrupted: Exception | None = None
		self._pool = urllib3.ProxyManager(proxy, num_pools=1, maxsize=1, timeout=urllib3.Timeout(timeout))

	def post(self, headers: dict[str, str], body: bytes) -> Response:
		if body[:2] == GZIP_MAGIC:
			headers = dict(headers, **{"Content-Encoding": "gzip"})
		r = self._pool.urlopen("POST", self.Url, body=body, headers=headers, retries=False, redirect=False)
		return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.data or b"")

	def post_many(
		self,
		headers: dict[str, str],
		bodies: typing.Sequence[bytes],
		wait: float = 0.0,
		on_responses: OnResponses | None = None,
	) -> list[Response]:
		"""One request after the other (no pipelining through a proxy); the same contract as `Connection`'s."""
		responses: list[Response] = []
		self.Interrupted = None
		for body in bodies:
			try:
				response = self.post(headers, body)
			except Exception as e:
				if not responses:
					raise
				self.Interrupted = e
				break
			responses.append(response)
			self.Answered += 1
			if on_responses is not None:
				on_responses(len(responses) - 1, [response])
		return responses

	def close(self) -> None:
		self._pool.clear()


class CertificatesError(Exception):
	"""
	What the environment names for connecting cannot be used: the CA certificates (``SSL_CERT_FILE``,
	``REQUESTS_CA_BUNDLE``) or the proxy (``https_proxy``, ``http_proxy``; its password is masked in `Path`).
	"""

	def __init__(self, variable: str, path: str, error: Exception):
		self.Variable = variable
		self.Path = path
		super().__init__("cannot be used: {}".format(error))


def _mask_password(url: str) -> str:
	try:
		parts = urllib.parse.urlsplit(url)
		if parts.password is None:
			return url
		netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
		return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
	except ValueError:
		return "<unparsable proxy URL>"


def connection_factory(url: str, timeout: float) -> typing.Callable[[], Connection | ProxyConnection]:
	"""
	Makes one connection per sender: direct, or through the proxy the environment names for this host.

	Raises:
		CertificatesError: HTTPS, and the CA file of ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` cannot be loaded
			(checked here, once: in a sender thread it killed every sender and nothing was ever sent).
	"""
	parts = urllib.parse.urlsplit(url)
	proxy = urllib.request.getproxies().get(parts.scheme)
	if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
		try:  # a malformed proxy URL fails here, once, not in every sender thread
			ProxyConnection(url, proxy, timeout).close()
		except Exception as e:
			names = ("{}_proxy".format(parts.scheme), "{}_PROXY".format(parts.scheme.upper()))
			variable = next((n for n in names if os.environ.get(n)), names[0])
			raise CertificatesError(variable, _mask_password(proxy), e)
		return lambda: ProxyConnection(url, proxy, timeout)
	if parts.scheme != "https":
		return lambda: Connection(url, timeout)
	try:
		context = _default_context()
	except (OSError, ValueError) as e:
		variable = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "REQUESTS_CA_BUNDLE"
		raise CertificatesError(variable, os.environ.get(variable, ""), e)
	return lambda: Connection(url, timeout, context)
