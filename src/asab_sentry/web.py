"""
asab.web instrumentation: one lean transaction per request, distributed traces, exact error reports.

`SentryService` installs it when the application uses asab.web (``[sentry:web] enabled``, default true); it
replaces sentry-sdk's AioHttpIntegration, which this package switches off. aiohttp is imported only when the
application has imported asab.web itself.

Per request (a middleware put first in every asab.web container, before the container starts):

- Requests to ``[sentry:web] ignore_paths`` (``/asab/v1/*`` always) are passed through untouched.
- The trace: an incoming ``sentry-trace`` / ``baggage`` is continued, otherwise a new trace starts. Events
  captured while the request is handled carry its trace id, also when tracing is off.
- Sampling: with ``[sentry] traces_sample_rate`` unset or 0 no transaction is created, whatever the caller
  decided. Above 0 the caller's decision is followed when the request carries one (Sentry's convention), else
  the rate decides. A sampled request is one transaction, op ``http.server``, named ``METHOD /route/{pattern}``
  (requests that match no route: ``METHOD (unmatched)``), status from the response status.
- A response whose status is in ``[sentry:web] failed_status_codes`` (default 500-599) gives exactly one error
  event: the exception that caused it (raised by the handler, or translated by asab's
  ``JsonExceptionMiddleware``, whose log records then give no event of their own), else a message naming the
  route and the status. Other responses never give an error event.
- Events carry the request (method, URL, query string, headers with secrets filtered — headers on error
  events only), the ``tenant`` tag and the user id from ``asab.contextvars``; user name, e-mail and client IP
  only with ``[sentry] send_default_pii``.
- Outgoing aiohttp ``ClientSession`` requests made while a request is handled get an ``http.client`` span
  (when the request is sampled) and, only for hosts matching ``[sentry:web] trace_propagation_targets``, the
  headers ``sentry-trace: <trace id>-<span id>[-<sampled 1|0>]`` and ``baggage`` with the ``sentry-*`` entries
  of the trace (the caller's unchanged when continued; otherwise ``trace_id``, ``public_key`` (the DSN's
  public key), ``environment``, ``release``, ``transaction`` (the route name) and, when tracing is on,
  ``sample_rate``, ``sample_rand`` and ``sampled``). Other baggage entries of the request are kept.
"""

from __future__ import annotations

import contextvars
import datetime
import fnmatch
import functools
import inspect
import ipaddress
import json
import logging
import platform
import re
import sys
import time
import typing
from urllib.parse import quote, unquote

import sentry_sdk
import sentry_sdk.envelope
import sentry_sdk.scope
import sentry_sdk.tracing
import sentry_sdk.tracing_utils
import sentry_sdk.utils

from . import _sdk, breadcrumbs, limits, scrub
from . import capture as capture_module
from . import logging as sentry_logging
from .settings import Settings, WebSettings

L = logging.getLogger(__name__)

OP_SERVER = "http.server"
OP_CLIENT = "http.client"
ORIGIN = "auto.http.asab_sentry"
UNMATCHED = "{} (unmatched)"
FILTERED = "[Filtered]"

MAX_SPANS = 1000

_RUNTIME = {"name": platform.python_implementation(), "version": platform.python_version(), "build": sys.version}

# Trace, span and event ids: random bits from the package's own generator (capture._ids: seeded from os.urandom,
# reseeded after fork, untouched by the application's random.seed()), as random as uuid4's for an id that only has
# to be unique, without an os.urandom system call per id, which releases the interpreter lock: on a busy loop with
# sender threads waiting for the lock, every release can cost the loop a hand-over.
_random_bits = capture_module._ids.getrandbits
_random = capture_module._ids.random

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"))

# Marks an exception already reported (as an attribute: exceptions cannot be weakly referenced).
_REPORTED = "_asab_sentry_reported"

# Headers that identify the client's address: sent only with send_default_pii.
_ADDRESS_HEADERS = frozenset(("x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip", "cf-connecting-ip"))


def scrub_headers(headers: typing.Mapping[str, str], send_default_pii: bool = False) -> dict[str, str]:
	"""
	Request headers as they may be sent: secret values (``Authorization``, ``Cookie``, ``X-Api-Key``, ... by
	the rules of `asab_sentry.scrub`, ``[sentry] scrub_keys`` included) replaced by ``[Filtered]``; the
	client's address headers (``X-Forwarded-For``, ``Forwarded``, ...) too unless ``send_default_pii``.

	>>> scrub_headers({"Authorization": "Bearer x", "Accept": "*/*"})
	{'Authorization': '[Filtered]', 'Accept': '*/*'}
	"""
	scrubbed = scrub.scrub_headers(headers)
	if not send_default_pii:
		for name in scrubbed:
			if name.lower() in _ADDRESS_HEADERS:
				scrubbed[name] = FILTERED
	return scrubbed


def scrub_query(query: str) -> str:
	"""
	A query string with the values of secret parameters replaced by ``[Filtered]`` (`asab_sentry.scrub`).

	>>> scrub_query("page=2&access_token=abc")
	'page=2&access_token=%5BFiltered%5D'
	"""
	return scrub.active().scrub_query(query) if query else query


# -- Propagation targets -------------------------------------------------------------------------------------

_PRIVATE_NETWORKS = tuple(
	ipaddress.ip_network(n)
	for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
)
_CLUSTER_LOCAL_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local")


class PropagationTargets:
	"""
	Decides which hosts get trace headers (``[sentry:web] trace_propagation_targets``).

	Named classes: ``loopback`` (127.0.0.0/8, ::1, ``localhost``, ``*.localhost``), ``private`` (10.0.0.0/8,
	172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, fc00::/7, fe80::/10), ``single-label`` (a host name
	without a dot, e.g. a Docker Compose service), ``cluster-local`` (names ending in ``.svc``,
	``.svc.cluster.local`` or ``.cluster.local``); besides them host name globs (``*.example.internal``),
	IP networks (``10.1.0.0/16``) and ``*`` (every host). Host names are not resolved.

	>>> t = PropagationTargets(("loopback", "private", "single-label", "cluster-local"))
	>>> [t.matches(h) for h in ("127.0.0.1", "users", "db.team.svc.cluster.local", "10.2.3.4", "api.github.com")]
	[True, True, True, True, False]
	"""

	def __init__(self, targets: typing.Iterable[str]):
		self.Targets = tuple(targets)
		self._networks = []
		self._globs = []
		for target in self.Targets:
			if "/" in target:
				self._networks.append(ipaddress.ip_network(target, strict=False))
			elif target not in ("loopback", "private", "single-label", "cluster-local"):
				self._globs.append(re.compile(fnmatch.translate(target)))
		self._cache: dict[str, bool] = {}

	def matches(self, host: str | None) -> bool:
		if not host:
			return False
		result = self._cache.get(host)
		if result is None:
			result = self._decide(host.lower().strip("[]").rstrip("."))
			if len(self._cache) < 1024:
				self._cache[host] = result
		return result

	def _decide(self, host: str) -> bool:
		targets = self.Targets
		try:
			address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
		except ValueError:
			address = None
		if address is not None:
			if "loopback" in targets and address.is_loopback:
				return True
			if "private" in targets and any(address in n for n in _PRIVATE_NETWORKS if n.version == address.version):
				return True
			if any(address in n for n in self._networks if n.version == address.version):
				return True
		else:
			if "loopback" in targets and (host == "localhost" or host.endswith(".localhost")):
				return True
			if "single-label" in targets and "." not in host:
				return True
			if "cluster-local" in targets and host.endswith(_CLUSTER_LOCAL_SUFFIXES):
				return True
		return any(g.match(host) for g in self._globs) or "*" in targets


# -- Per-request state ---------------------------------------------------------------------------------------


class RequestState:
	"""What the instrumentation knows about the request being handled (a context variable holds it)."""

	__slots__ = (
		"Request",
		"Name",
		"Source",
		"_trace_id",
		"_span_id",
		"ParentSpanId",
		"ParentSampled",
		"Baggage",
		"Transaction",
		"Tenant",
		"Authz",
		"Exception",
		"SampleRand",
	)

	def __init__(self, request: typing.Any):
		self.Request = request
		self.Name: str | None = None
		self.Source = "route"
		self._trace_id: str | None = None
		self._span_id: str | None = None
		self.ParentSpanId: str | None = None
		self.ParentSampled: bool | None = None
		self.Baggage: str | None = None  # the caller's sentry-* baggage entries, passed on unchanged
		self.Transaction: typing.Any = None  # the sampled sentry_sdk Transaction
		self.Tenant: str | None = None
		self.Authz: typing.Any = None
		self.Exception: BaseException | None = None  # translated into a response by asab's JSON middleware
		self.SampleRand: float | None = None

	@property
	def TraceId(self) -> str:
		if self._trace_id is None:
			self._trace_id = "%032x" % _random_bits(128)
		return self._trace_id

	@property
	def SpanId(self) -> str:
		if self._span_id is None:
			self._span_id = "%016x" % _random_bits(64)
		return self._span_id

	def route_name(self) -> str:
		if self.Name is None:
			request = self.Request
			method = request.method if request.method in _METHODS else "OTHER"
			resource = request.match_info.route.resource
			canonical = resource.canonical if resource is not None else None
			if canonical:
				self.Name = method + " " + canonical
			else:
				self.Name = UNMATCHED.format(method)
				self.Source = "custom"
		return self.Name


current: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar("asab_sentry_request", default=None)


def _client_error(exception: BaseException) -> bool:
	"""An error aiohttp raises for a request it cannot parse (a header too long, a bad request line) with a 4xx code."""
	module = sys.modules.get("aiohttp.http_exceptions")
	if module is None or not isinstance(exception, module.HttpProcessingError):
		return False
	code = getattr(exception, "code", None)
	return isinstance(code, int) and 400 <= code < 500


_SENTRY_TRACE = re.compile(r"[ \t]*([0-9a-fA-F]{32})-([0-9a-fA-F]{16})(?:-([01]))?[ \t]*")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _parse_sentry_trace(state: RequestState, value: str) -> bool:
	"""
	Continue the caller's trace from ``sentry-trace: <trace id>-<span id>[-<sampled>]`` (32 and 16 hex digits,
	sampled ``1`` or ``0``); True when it is continued. Anything else, all-zero ids included (invalid in W3C trace
	context, refused by Relay), is ignored: the request starts a trace of its own (and the caller's ``baggage``,
	another trace's context, is not its own either).
	"""
	match = _SENTRY_TRACE.fullmatch(value)
	if match is None:
		return False
	trace_id, span_id, sampled = match.groups()
	if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
		return False
	state._trace_id = trace_id.lower()
	state.ParentSpanId = span_id.lower()
	if sampled is not None:
		state.ParentSampled = sampled == "1"
	return True


def _sentry_baggage(value: str | None) -> str | None:
	if not value:
		return None
	items = [item.strip() for item in value.split(",") if item.strip().startswith("sentry-")]
	return ",".join(items) or None


# -- The instrumentation -------------------------------------------------------------------------------------


class WebInstrumentation:
	"""
	The middleware, the outgoing-request hooks and the event processor of one `SentryService`.

	Created and installed by `SentryService` when ``[sentry:web] enabled``; `instrument()` adds the middleware
	to an aiohttp application.
	"""

	def __init__(self, settings: Settings):
		web: WebSettings = settings.web
		self.Settings = settings
		self.FailedStatusCodes = web.failed_status_codes
		self.SendDefaultPii = settings.send_default_pii
		self.Tracing = settings.traces_sample_rate > 0
		self.Targets = PropagationTargets(web.trace_propagation_targets)
		self._ignored = re.compile("|".join("(?:{})".format(fnmatch.translate(p)) for p in web.ignore_paths)).match
		#: A match (truthy) for a path passed through untouched (``[sentry:web] ignore_paths``, asab's own API).
		self.IgnoredPath: typing.Callable[[str], typing.Any] = self._ignored
		self.Middleware = self._make_middleware()
		self._middleware_with_request: typing.Callable | None = None  # setting asab's request context too
		self._dsc_client: typing.Any = None  # the client _dsc_base was read from
		self._dsc_base: dict[str, str] = {}
		# Request transactions' payloads and envelope headers from templates (_templated, _envelope_header).
		self._templates: dict[tuple, str | None] = {}
		self._templates_for: tuple = (None, None, None, None)  # the client, final pass and scrubbers they were made for
		self._seen: dict[tuple, None] = {}  # kinds of request seen once (no template yet)
		self._headers: dict[tuple, str | None] = {}
		self._headers_for: typing.Any = None  # the client _headers were made for (_dsc_client also follows _baggage)

	# Installation

	def instrument(self, webapp: typing.Any) -> bool:
		"""Put the middleware first in an aiohttp application; False when it is frozen (already started)."""
		if any(getattr(m, "_asab_sentry", False) for m in webapp.middlewares):
			return True
		if webapp.frozen:
			L.warning(
				"A web container started before SentryService was created: its requests are not instrumented.",
				extra={sentry_logging.NO_EVENT: True},
			)
			return False
		middleware = self.Middleware
		setter = getattr(sys.modules.get("asab.web.container"), "set_request_context", None)
		if setter is not None and setter in webapp.middlewares:
			# asab's own middleware only sets its request context variable: ours does that first, one middleware
			# (and one coroutine) less per request.
			webapp.middlewares.remove(setter)
			if self._middleware_with_request is None:
				import asab.contextvars

				self._middleware_with_request = self._make_middleware(asab.contextvars.Request)
			middleware = self._middleware_with_request
		webapp.middlewares.insert(0, middleware)
		webapp.on_startup.insert(0, self._wrap_routes)
		return True

	async def _wrap_routes(self, webapp: typing.Any) -> None:
		# asab's auth and tenant wrappers are added in on_startup too, after this one: ours is the innermost and
		# sees the request's tenant and authorization while the handler runs.
		import asab.contextvars

		app = webapp.get("app")
		get_service = getattr(app, "get_service", None)
		if (
			get_service is not None
			and get_service("asab.TenantService") is None
			and get_service("asab.AuthService") is None
		):
			return  # nothing sets the tenant or the authorization: no wrapper, nothing to pay per request
		tenant_var, authz_var = asab.contextvars.Tenant, asab.contextvars.Authz
		for route in webapp.router.routes():
			handler = route.handler
			if not inspect.iscoroutinefunction(handler) or getattr(handler, "_asab_sentry", False):
				continue

			def wrap(handler):
				@functools.wraps(handler)
				async def handler_with_context(*args, **kwargs):
					state = current.get()
					if state is not None:
						state.Tenant = tenant_var.get(None)
						state.Authz = authz_var.get(None)
					return await handler(*args, **kwargs)

				handler_with_context._asab_sentry = True  # type: ignore[attr-defined]
				return handler_with_context

			route._handler = wrap(handler)  # aiohttp keeps no public setter; asab's auth does the same

	def _make_middleware(self, request_var: contextvars.ContextVar | None = None) -> typing.Callable:
		"""
		The aiohttp middleware; with ``request_var`` (asab's ``asab.contextvars.Request``) it also does what asab's
		``set_request_context`` middleware does, which `instrument` then leaves out.
		"""
		import aiohttp.web

		HTTPException = aiohttp.web.HTTPException
		ignored = self._ignored
		failed = self.FailedStatusCodes
		finish = self._finish
		fork_scope, restore_scope = _sdk.fork_isolation_scope, _sdk.restore_isolation_scope

		if self.Tracing:
			return self._make_traced_middleware(request_var)

		@aiohttp.web.middleware
		async def asab_sentry_middleware(request, handler):
			request_token = request_var.set(request) if request_var is not None else None
			try:
				if ignored(request.path):
					return await handler(request)
				state = RequestState(request)
				headers = request.headers
				sentry_trace = headers.get("sentry-trace")
				if sentry_trace is not None and _parse_sentry_trace(state, sentry_trace):
					state.Baggage = _sentry_baggage(headers.get("baggage"))
				token = current.set(state)
				try:
					# Tracing off (every request): _handle inlined, one coroutine less per request.
					# The request's own scopes: its tags and breadcrumbs stay its own. (asab's access log is
					# written after this: a breadcrumb of the global scope, see `asab_sentry.logging`.)
					scope_token = fork_scope()
					try:
						response = await handler(request)
						if response.status in failed:  # reported in the request's scope, as the exceptions are
							finish(state, response.status, None, failed)
						return response
					except HTTPException as e:
						finish(state, e.status, e if e.status in failed else None, failed)
						raise
					except Exception as e:
						finish(state, 500, e, failed)
						raise
					finally:
						restore_scope(scope_token)
				finally:
					current.reset(token)
			finally:
				if request_token is not None:
					request_var.reset(request_token)  # type: ignore[union-attr]

		asab_sentry_middleware._asab_sentry = True  # type: ignore[attr-defined]
		return asab_sentry_middleware

	def _make_traced_middleware(self, request_var: contextvars.ContextVar | None) -> typing.Callable:
		"""The middleware with tracing on (one coroutine per request: the transaction's part inlined)."""
		import aiohttp.web

		HTTPException = aiohttp.web.HTTPException
		ignored = self._ignored
		failed = self.FailedStatusCodes
		finish, sample, send, handle = self._finish, self._sample, self._send_transaction, self._handle
		fork_scopes, restore_scopes = _sdk.fork_scopes, _sdk.restore_scopes
		Transaction, Baggage = sentry_sdk.tracing.Transaction, sentry_sdk.tracing_utils.Baggage

		@aiohttp.web.middleware
		async def asab_sentry_middleware(request, handler):
			request_token = request_var.set(request) if request_var is not None else None
			try:
				if ignored(request.path):
					return await handler(request)
				state = RequestState(request)
				headers = request.headers
				sentry_trace = headers.get("sentry-trace")
				if sentry_trace is not None and _parse_sentry_trace(state, sentry_trace):
					state.Baggage = _sentry_baggage(headers.get("baggage"))
				token = current.set(state)
				try:
					tokens = fork_scopes()  # the request's own current and isolation scopes
					try:
						if not sample(state):
							return await handle(request, handler, state, HTTPException, failed)
						# A sentry-sdk Transaction keeps the spans (the application's own, http.client, tasks); it is not
						# finished by sentry-sdk but sent by _send_transaction, without sentry-sdk's event pipeline.
						transaction = Transaction(
							# The request's sample_rand (else sentry-sdk derives its own from the trace id, a seeded
							# generator per request), so that what sentry-sdk propagates agrees with this module's dynamic
							# sampling context.
							baggage=Baggage({"sample_rand": "{:.6f}".format(state.SampleRand)}),
							trace_id=state.TraceId,
							span_id=state.SpanId,
							parent_span_id=state.ParentSpanId,
							parent_sampled=state.ParentSampled,
							same_process_as_parent=False,
							sampled=True,
							op=OP_SERVER,
							name=state.route_name(),
							source=state.Source,
							origin=ORIGIN,
						)
						transaction.init_span_recorder(maxlen=MAX_SPANS)
						state.Transaction = transaction
						scope = tokens[2]
						scope.span = transaction
						start = time.time()
						try:
							try:
								response = await handler(request)
							except HTTPException as e:
								finish(state, e.status, e if e.status in failed else None, failed)
								raise
							except Exception as e:
								finish(state, 500, e, failed)
								raise
							except BaseException:  # cancelled: the client went away
								transaction.set_status("cancelled")
								raise
							finish(state, response.status, None, failed)
							return response
						finally:
							scope.span = None
							try:
								send(state, transaction, start, time.time())
							except Exception:
								sentry_sdk.utils.capture_internal_exception(sys.exc_info())
					finally:
						restore_scopes(tokens)
				finally:
					current.reset(token)
			finally:
				if request_token is not None:
					request_var.reset(request_token)  # type: ignore[union-attr]

		asab_sentry_middleware._asab_sentry = True  # type: ignore[attr-defined]
		return asab_sentry_middleware

	def _sample(self, state: RequestState) -> bool:
		"""Sentry's rule: the caller's decision when there is one, else ``sample_rand < traces_sample_rate``."""
		rand = None
		if state.Baggage:
			for item in state.Baggage.split(","):
				key, _, value = item.strip().partition("=")
				if key == "sentry-sample_rand":
					try:
						rand = float(value)
					except ValueError:
						pass
		if rand is None or not (0.0 <= rand < 1.0):
			# Six decimals, never rounded up (sentry-sdk's rule): what is written ("{:.6f}") is what was decided on.
			rand = int(_random() * 1_000_000) / 1_000_000
		state.SampleRand = rand
		if state.ParentSampled is not None:
			return state.ParentSampled
		return rand < self.Settings.traces_sample_rate

	def _send_transaction(self, state: RequestState, transaction: typing.Any, start: float, end: float) -> None:
		client = sentry_sdk.get_client()
		transport = client.transport
		if transport is None:
			return
		tags, user, contexts = _sdk.scope_data()
		span_tags, span_data = _sdk.span_tags_and_data(transaction)
		tags.update(span_tags)
		spans = _sdk.finished_child_spans(transaction)
		event_id = "%032x" % _random_bits(128)
		payload = None
		if not spans and not contexts:
			payload = self._templated(client, state, transaction, tags, user, span_data, event_id, start, end)
		if payload is None:
			event = self._transaction_event(
				client, state, transaction, tags, user, contexts, span_data, spans, event_id, start, end
			)
			payload = _transaction_payload(event)
		header = self._envelope_header(state, event_id, client)
		transport.capture_envelope(_EncodedEnvelope(header, "transaction", payload))

	def _transaction_event(
		self,
		client: typing.Any,
		state: RequestState,
		transaction: typing.Any,
		tags: dict,
		user: dict | None,
		contexts: dict,
		span_data: dict,
		spans: list,
		event_id: str,
		start: typing.Any,
		end: typing.Any,
		slots: dict[str, str] | None = None,
	) -> dict:
		"""
		The transaction event of a request. With ``slots`` (`_templated`), the ids, timestamps and URL are
		those placeholders.
		"""
		slot = (slots or {}).get
		trace = {
			"trace_id": slot("trace_id", state.TraceId),
			"span_id": slot("span_id", state.SpanId),
			"op": OP_SERVER,
			"origin": ORIGIN,
		}
		if state.ParentSpanId is not None:
			trace["parent_span_id"] = slot("parent_span_id", state.ParentSpanId)
		if transaction.status:
			trace["status"] = transaction.status
		if span_data:
			trace["data"] = span_data
		contexts = dict(contexts)
		contexts["trace"] = trace
		contexts["runtime"] = _RUNTIME
		status = span_data.get("http.response.status_code")
		if status is not None:
			contexts["response"] = {"status_code": status}
		event: dict[str, typing.Any] = {
			"type": "transaction",
			"event_id": slot("event_id", event_id),
			"transaction": transaction.name,
			"transaction_info": {"source": state.Source},
			"contexts": contexts,
			"tags": tags,
			"start_timestamp": slot("start", start),
			"timestamp": slot("end", end),
			"spans": [span.to_json() for span in spans],
			"request": {},  # method, URL, query string: _add_request
			"platform": "python",
			"sdk": {"name": "sentry.python", "version": sentry_sdk.VERSION},
		}
		if user:
			event["user"] = user
		options = client.options
		for key in ("release", "environment", "server_name"):
			if options.get(key):
				event[key] = options[key]
		self._add_request(event, state)
		if slots is not None:
			event["request"]["url"] = slots["url"]
			if "query_string" in event["request"]:
				event["request"]["query_string"] = slots["query"]
		return event

	def _templated(
		self,
		client: typing.Any,
		state: RequestState,
		transaction: typing.Any,
		tags: dict,
		user: dict | None,
		span_data: dict,
		event_id: str,
		start: float,
		end: float,
	) -> bytes | None:
		"""
		The payload of a transaction without spans or scope contexts (a hello world's) as `_transaction_payload`
		gives it for the event `_transaction_event` builds, from a template: what varies per request (the ids,
		the timestamps, the URL) filled into the text of an earlier request that had everything else in common
		(route, status, tags, user, query string, the transaction's data), made when that request's payload was
		made the usual way and found equal. None when there is no such template (the caller goes the usual way).
		"""
		final_pass = limits._active[0] if limits._active else None
		if final_pass is None or type(final_pass) is not limits.FinalPass or final_pass.Before not in _NO_OP_BEFORE:
			return None
		scrubber = final_pass.Scrubber or scrub.active()
		known = self._templates_for
		active = scrub.active()  # (_add_request scrubs the query string with it)
		if known[0] is not client or known[1] is not final_pass or known[2] is not scrubber or known[3] is not active:
			self._templates.clear()
			self._seen.clear()
			self._templates_for = (client, final_pass, scrubber, active)
		# What _add_request adds: request data, the tenant tag, the user (``tags`` and ``user`` are the caller's
		# own copies: what is added here, _add_request adds again the same way).
		request: dict[str, typing.Any] = {}
		added: dict[str, typing.Any] = {"type": "transaction", "tags": tags, "request": request}
		if user:
			added["user"] = user
		self._add_request(added, state)
		final_user = added.get("user")
		if "env" in request:
			return None
		user_items = tuple(final_user.items()) if final_user else ()
		key = (
			transaction.name,
			state.Source,
			transaction.status,
			state.ParentSpanId is None,
			bool(user),
			final_user is None,
			request.get("method"),
			"query_string" in request,
			tuple(tags.items()),
			user_items,
			tuple(span_data.items()),
		)
		for pairs in key[-3:]:
			for k, v in pairs:
				# (values that compare equal encode alike only when they are str or int: 1 == 1.0 == True)
				if k.__class__ is not str or (v.__class__ is not str and v.__class__ is not int):
					return None
		template = self._templates.get(key, _MISSING)
		if template is _MISSING:
			if _key_size(key) > MAX_TEMPLATED_TEXT:
				# (the caches keep their kinds' texts: large values, maybe unique per request, go the usual way)
				return None
			# A template is made the second time a kind of request is seen: a kind seen once only (a tag
			# unique to each request) costs no more than the usual way.
			if key not in self._seen:
				if len(self._seen) >= MAX_TEMPLATES:
					self._seen.clear()
				self._seen[key] = None
				return None
			template = self._make_template(client, state, transaction, tags, user, span_data, event_id, start, end)
			if len(self._templates) >= MAX_TEMPLATES:
				self._templates.clear()
			self._templates[key] = template
		if template is None:
			return None
		try:
			payload = template.format(*_slot_values(scrubber, state, request, event_id, start, end))
			payload = payload.encode("utf-8")
		except UnicodeEncodeError:
			return None
		if len(payload) * 3 > min(final_pass.MaxCompressed, final_pass.MaxBytes):
			return None
		return payload

	def _make_template(
		self, client, state: RequestState, transaction, tags, user, span_data, event_id, start, end
	) -> str | None:
		"""A format string for `_templated`, checked against this request's payload made the usual way."""
		slots = {name: _SLOT.format(name) for name in _PAYLOAD_SLOTS}
		copies = (dict(tags), dict(user) if user else user, dict(span_data))
		placeholders = {name: slots[number] for name, number in zip(_PAYLOAD_SLOT_NAMES, _PAYLOAD_SLOTS, strict=True)}
		event = self._transaction_event(
			client, state, transaction, *copies[:2], {}, copies[2], [], "", 0, 0, placeholders
		)
		text = _transaction_payload(event).decode("utf-8")
		if state.ParentSpanId is None:
			del slots[_PAYLOAD_SLOTS[_PAYLOAD_SLOT_NAMES.index("parent_span_id")]]
		if "query_string" not in event["request"]:
			del slots[_PAYLOAD_SLOTS[_PAYLOAD_SLOT_NAMES.index("query")]]
		template = _format_template(text, {number: _json_encode(slot) for number, slot in slots.items()})
		if template is None:
			return None
		expected = _transaction_payload(
			self._transaction_event(client, state, transaction, tags, user, {}, span_data, [], event_id, start, end)
		)
		request: dict = {}
		self._add_request({"type": "transaction", "request": request}, state)
		values = _slot_values(self._templates_for[2], state, request, event_id, start, end)
		try:
			if template.format(*values).encode("utf-8") == expected:
				return template
		except UnicodeEncodeError:
			pass
		return None

	def _envelope_header(self, state: RequestState, event_id: str, client: typing.Any) -> bytes:
		"""The envelope's headers (event id, the trace's dynamic sampling context) as sentry-sdk writes them."""
		if state.Baggage is not None or state.ParentSpanId is not None or state.SampleRand is None:
			return sentry_sdk.utils.json_dumps({"event_id": event_id, "trace": self._dsc(state)})
		if client is not self._headers_for:
			self._headers.clear()  # (_dsc reads the new client's public key, environment and release)
			self._headers_for = client
		key = (state.route_name(), state.Transaction is not None)
		template = self._headers.get(key, _MISSING)
		values = ('"' + event_id + '"', '"' + state.TraceId + '"', '"{:.6f}"'.format(state.SampleRand))
		if template is _MISSING:
			template = None
			dsc = self._dsc(state)
			encode = sentry_sdk.utils.json_dumps
			slots = [_SLOT.format(number) for number in range(3)]
			text = encode({"event_id": slots[0], "trace": dict(dsc, trace_id=slots[1], sample_rand=slots[2])})
			slot_texts = {str(number): encode(slot).decode("utf-8") for number, slot in enumerate(slots)}
			candidate = _format_template(text.decode("utf-8"), slot_texts)
			if candidate is not None and candidate.format(*values).encode("utf-8") == encode(
				{"event_id": event_id, "trace": dsc}
			):
				template = candidate
			if len(self._headers) >= MAX_TEMPLATES:
				self._headers.clear()
			self._headers[key] = template
		if template is None:
			return sentry_sdk.utils.json_dumps({"event_id": event_id, "trace": self._dsc(state)})
		return template.format(*values).encode("utf-8")

	def _dsc(self, state: RequestState) -> dict[str, str]:
		"""The trace's dynamic sampling context: the caller's when continued, else this service's."""
		if state.Baggage is not None or state.ParentSpanId is not None:
			dsc = {}
			for item in (state.Baggage or "").split(","):
				key, _, value = item.strip().partition("=")
				if key.startswith("sentry-") and value:
					dsc[key[len("sentry-") :]] = unquote(value)
			dsc.setdefault("trace_id", state.TraceId)
			return dsc
		client = sentry_sdk.get_client()
		if self._dsc_client is not client:
			base = {}
			if client.dsn:
				base["public_key"] = sentry_sdk.utils.Dsn(client.dsn).public_key
			for key in ("environment", "release"):
				value = client.options.get(key)
				if value:
					base[key] = str(value)
			self._dsc_base, self._dsc_client = base, client
		dsc = {"trace_id": state.TraceId}
		dsc.update(self._dsc_base)
		dsc["transaction"] = state.route_name()
		if self.Tracing:
			dsc["sample_rate"] = str(self.Settings.traces_sample_rate)
			if state.SampleRand is not None:
				dsc["sample_rand"] = "{:.6f}".format(state.SampleRand)
				dsc["sampled"] = "true" if state.Transaction is not None else "false"
		return dsc

	async def _handle(self, request, handler, state: RequestState, HTTPException, failed):
		try:
			response = await handler(request)
		except HTTPException as e:
			self._finish(state, e.status, e if e.status in failed else None, failed)
			raise
		except Exception as e:
			self._finish(state, 500, e, failed)
			raise
		except BaseException:  # cancelled: the client went away
			if state.Transaction is not None:
				state.Transaction.set_status("cancelled")
			raise
		self._finish(state, response.status, None, failed)
		return response

	def _finish(self, state: RequestState, status: int, exception: BaseException | None, failed) -> None:
		try:
			if status in failed:
				self._report(state, status, exception or state.Exception)
			if state.Transaction is not None:
				state.Transaction.set_http_status(status)
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())

	def _report(self, state: RequestState, status: int, exception: BaseException | None) -> None:
		if exception is not None:
			if getattr(exception, _REPORTED, False):
				return
			client = sentry_sdk.get_client()
			event, hint = sentry_sdk.utils.event_from_exception(
				exception, client_options=client.options, mechanism={"type": "asab.web", "handled": False}
			)
			event["level"] = "error"
			sentry_sdk.capture_event(event, hint=hint)
			mark_reported(exception)
		else:
			sentry_sdk.capture_event(
				{
					"level": "error",
					"logger": __name__,
					"logentry": {
						"message": "%s responded with status %s",
						"params": [state.route_name(), status],
						"formatted": "{} responded with status {}".format(state.route_name(), status),
					},
				}
			)

	# Events

	def event_processor(self, event: dict, hint: dict) -> dict:
		"""Adds the request (and its trace when no span is active) to events captured while it is handled."""
		state = current.get()
		if state is None:
			return event
		try:
			self._add_request(event, state)
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
		return event

	def _add_request(self, event: dict, state: RequestState) -> None:
		import asab.contextvars

		request = state.Request
		is_transaction = event.get("type") == "transaction"
		data = event.setdefault("request", {})
		data.setdefault("method", request.method)
		data.setdefault("url", "{}://{}{}".format(request.scheme, request.host, request.path))
		query = request.query_string
		if query:
			data.setdefault("query_string", scrub_query(query))
		if not is_transaction:
			data.setdefault("headers", scrub_headers(request.headers, self.SendDefaultPii))
			contexts = event.setdefault("contexts", {})
			if state.Transaction is None:
				# (sentry-sdk keeps the name of any transaction once started in the scope, sampled or not)
				event["transaction"] = state.route_name()
				trace = {"trace_id": state.TraceId, "span_id": state.SpanId, "op": OP_SERVER}
				if state.ParentSpanId is not None:
					trace["parent_span_id"] = state.ParentSpanId
				contexts["trace"] = trace
		if self.SendDefaultPii and request.remote:
			data.setdefault("env", {})["REMOTE_ADDR"] = request.remote

		tenant = asab.contextvars.Tenant.get(None) or state.Tenant
		if tenant:
			tags = event.setdefault("tags", {})
			tags.setdefault("tenant", str(tenant)[:200])
		authz = asab.contextvars.Authz.get(None) or state.Authz
		credentials_id = getattr(authz, "CredentialsId", None)
		if credentials_id:
			user = event.setdefault("user", {})
			user.setdefault("id", str(credentials_id))
			if self.SendDefaultPii:
				for key, attribute in (("username", "Username"), ("email", "Email")):
					value = getattr(authz, attribute, None)
					if value:
						user.setdefault(key, str(value))
		if self.SendDefaultPii and request.remote:
			event.setdefault("user", {}).setdefault("ip_address", request.remote)

	def claims_record(self, record: logging.LogRecord) -> bool:
		"""
		True when a log record must not become an event: it logs an exception this module reports (or
		decides not to report) itself, e.g. asab's JSON middleware translating an exception into a response.
		"""
		exception = record.exc_info[1] if record.exc_info else None
		if exception is None and isinstance(record.msg, BaseException):
			exception = record.msg
		if exception is None:
			return False
		if getattr(exception, _REPORTED, False):
			return True
		if record.name == "aiohttp.server" and _client_error(exception):
			return True  # a malformed request aiohttp answered with a 4xx: the client's error, not the service's
		state = current.get()
		if state is not None and record.name == "asab.web":
			state.Exception = exception
			return True
		return False

	# Outgoing requests

	def trace_config(self) -> typing.Any:
		import aiohttp

		config = aiohttp.TraceConfig()
		config.on_request_start.append(self._on_request_start)
		config.on_request_end.append(self._on_request_end)
		config.on_request_exception.append(self._on_request_exception)
		config._asab_sentry = True  # type: ignore[attr-defined]
		return config

	async def _on_request_start(self, session, context, params) -> None:
		state = current.get()
		if state is None:
			return
		try:
			url = params.url
			span = None
			if state.Transaction is not None:
				span = state.Transaction.start_child(
					op=OP_CLIENT, name="{} {}".format(params.method, url.with_query(None).with_fragment(None))
				)
				span.set_data("http.request.method", params.method)
				span.set_data("url", str(url.with_query(None).with_fragment(None)))
				if url.query_string:
					span.set_data("http.query", scrub_query(url.query_string))
				context.asab_sentry_span = span
			if self.Targets.matches(url.host):
				headers = params.headers
				headers["sentry-trace"] = self._sentry_trace(state, span)
				baggage = self._baggage(state, span)
				if baggage:
					others = [b.strip() for b in headers.get("baggage", "").split(",") if b.strip()]
					others = [b for b in others if not b.startswith("sentry-")]
					headers["baggage"] = ",".join([baggage] + others)
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())

	async def _on_request_end(self, session, context, params) -> None:
		span = getattr(context, "asab_sentry_span", None)
		if span is not None:
			span.set_http_status(params.response.status)
			span.finish()

	async def _on_request_exception(self, session, context, params) -> None:
		span = getattr(context, "asab_sentry_span", None)
		if span is not None:
			span.set_status("internal_error")
			span.finish()

	def _sentry_trace(self, state: RequestState, span: typing.Any) -> str:
		if span is not None:
			return "{}-{}-1".format(span.trace_id, span.span_id)
		sampled = state.ParentSampled
		if state.Transaction is None and self.Tracing and sampled is None:
			sampled = False  # this service decided: not sampled
		flag = "" if sampled is None else ("-1" if sampled else "-0")
		return "{}-{}{}".format(state.TraceId, state.SpanId, flag)

	def _baggage(self, state: RequestState, span: typing.Any) -> str | None:
		if state.Baggage is not None:
			return state.Baggage
		if state.ParentSpanId is not None:
			return None  # the caller sent a trace without baggage: it stays without (frozen, Sentry's rule)
		return ",".join("sentry-{}={}".format(k, quote(v, safe="")) for k, v in self._dsc(state).items())


MAX_TEMPLATES = 256  # kept per instrumentation, for payloads and for envelope headers (then forgotten, made again)
MAX_TEMPLATED_TEXT = 4096  # characters of name, tag, user and data keys and values a templated kind may have (memory)
# The slots of a payload template: format fields {0} to {7}, in the order `_slot_values` gives their texts.
_PAYLOAD_SLOT_NAMES = ("event_id", "trace_id", "span_id", "parent_span_id", "start", "end", "url", "query")
_PAYLOAD_SLOTS = tuple(str(number) for number in range(len(_PAYLOAD_SLOT_NAMES)))


def _key_size(key: tuple) -> int:
	"""Characters of a `_templated` key's name and of its tags', user's and data's keys and values (str or int)."""
	name = key[0]
	size = len(name) if name.__class__ is str else MAX_TEMPLATED_TEXT + 1
	for pairs in key[-3:]:
		for k, v in pairs:
			size += len(k) + (len(v) if v.__class__ is str else 0)
	return size


def _slot_values(
	scrubber: scrub.Scrubber, state: RequestState, request: dict, event_id: str, start: float, end: float
) -> tuple[str, ...]:
	"""
	The JSON texts of what varies per request (`_PAYLOAD_SLOT_NAMES`), as the final pass and `_json_encode` give
	them; ``request`` is the request data `WebInstrumentation._add_request` gives.
	"""
	url = request["url"]
	if "@" in url or "?" in url:  # (nothing else scrub_url changes: a password, query parameters)
		url = scrubber.scrub_url(url)
	query = request.get("query_string")
	parent = state.ParentSpanId
	return (
		'"' + event_id + '"',
		'"' + state.TraceId + '"',
		'"' + state.SpanId + '"',
		"" if parent is None else '"' + parent + '"',
		_float_repr(start),  # (time.time() is finite: the encoder writes its repr)
		_float_repr(end),
		_encode_string(url),
		"" if query is None else _encode_string(scrubber.scrub_query(query)),
	)


_MISSING = object()
# A placeholder for what varies per request in a template's text: private-use characters, which the encoders keep as
# they are (or escape, in ASCII JSON) and no scrubbing rule looks at.
_SLOT = "\ue000asab-sentry-{}\ue000"


def _format_template(text: str, slots: dict[str, str]) -> str | None:
	"""
	``text`` as a format string: each slot's text (found exactly once) replaced by ``{name}``, braces doubled.
	None when a slot is not found exactly once.
	"""
	found = []
	for name, slot in slots.items():
		at = text.find(slot)
		if at < 0 or text.find(slot, at + 1) >= 0:
			return None
		found.append((at, name, slot))
	found.sort()
	pieces, position = [], 0
	for at, name, slot in found:
		pieces.append(text[position:at].replace("{", "{{").replace("}", "}}"))
		pieces.append("{" + name + "}")
		position = at + len(slot)
	pieces.append(text[position:].replace("{", "{{").replace("}", "}}"))
	return "".join(pieces)


_float_repr = float.__repr__
_encode_string = json.encoder.encode_basestring  # (what _json_encode does with a str: ensure_ascii=False)


class _EncodedEnvelope(sentry_sdk.envelope.Envelope):
	"""
	A sentry-sdk envelope of one item whose bytes are made when it is built: `serialize` gives them (a transport
	serializes it without encoding anything), the same bytes as sentry-sdk's ``Envelope.serialize`` of its headers
	and item. ``headers`` is decoded when read; an envelope whose headers were read or whose items changed is
	serialized by sentry-sdk's code.
	"""

	def __init__(self, header: bytes, item_type: str, payload: bytes):
		self.items = [sentry_sdk.envelope.Item(payload=sentry_sdk.envelope.PayloadRef(bytes=payload), type=item_type)]
		self._item = self.items[0]
		self._header = header
		self._headers: dict | None = None
		item_header = b'{"type":"%s","content_type":"application/octet-stream","length":%d}' % (
			item_type.encode("ascii"),  # (a name such as "transaction": nothing to escape)
			len(payload),
		)
		self._data: bytes | None = b"".join((header, b"\n", item_header, b"\n", payload, b"\n"))

	@property  # type: ignore[override]
	def headers(self) -> dict:
		# Read (and maybe changed in place): from now on serialized by sentry-sdk's code.
		if self._headers is None:
			self._headers = json.loads(self._header)
		self._data = None
		return self._headers

	@headers.setter
	def headers(self, value: dict) -> None:
		self._headers = value
		self._data = None

	def serialize_into(self, f: typing.Any) -> None:
		if self._data is not None and len(self.items) == 1 and self.items[0] is self._item:
			f.write(self._data)
		else:
			super().serialize_into(f)

	def serialize(self) -> bytes:
		if self._data is not None and len(self.items) == 1 and self.items[0] is self._item:
			return self._data
		return super().serialize()


def _transaction_payload(event: dict) -> bytes:
	"""
	What sentry-sdk's ``before_send_transaction`` does for other transactions (`limits.finalize`: the same secret
	rules as every other event, valid text, within Sentry's size limits), then the JSON: in one encoding when the
	final pass would change nothing but the secrets, as for almost every request's transaction.

	The final pass scrubs the event, encodes it to measure it, and changes nothing else when it is within the
	compressed-size limit (then nothing is compressed to measure it either) and holds no lone surrogate; here the
	event is scrubbed by the same rules (`scrub.active`, ``[sentry] scrub_keys`` included) and encoded once:
	when that encoding holds no lone surrogate (UTF-8 cannot encode it), no NaN or infinity, no object JSON cannot
	carry, and is small enough that even with every character escaped it would be within the limit, it is what the
	final pass followed by `_json_payload` would give. Otherwise both run as before.
	"""
	final_pass = limits._active[0] if limits._active else None  # the running SentryService's (limits.install)
	if final_pass is None or type(final_pass) is not limits.FinalPass or final_pass.Before not in _NO_OP_BEFORE:
		return _json_payload(limits.finalize(event))
	(final_pass.Scrubber or scrub.active()).scrub_event(event)
	try:
		payload = _json_encode(event).encode("utf-8")
	except (TypeError, ValueError, UnicodeEncodeError):
		payload = None
	# A character escaped by the final pass's ASCII encoding (\uXXXX) takes at most 3 times its UTF-8 bytes.
	if payload is not None and len(payload) * 3 <= min(final_pass.MaxCompressed, final_pass.MaxBytes):
		return payload
	return _json_payload(limits.finalize(event))  # scrubbing again changes nothing


# The final pass's ``before`` steps that leave an event built here unchanged: breadcrumbs.restore (no breadcrumbs
# stashed in the hint; limits.finalize passes an empty one).
_NO_OP_BEFORE = (None, breadcrumbs.restore)


_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _json_payload(event: dict) -> bytes:
	"""The event as JSON Relay accepts: lone surrogates replaced, NaN and infinities as null."""
	try:
		return json.dumps(
			event, default=_json_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
		).encode("utf-8")
	except (ValueError, UnicodeEncodeError):
		text = json.dumps(scrub.sanitize(event), default=_json_default, separators=(",", ":"), ensure_ascii=False)
		text = scrub.sanitize_text(text)
		return re.sub(r"(?<=[:,\[])(?:NaN|-?Infinity)(?=[,\]}])", "null", text).encode("utf-8")


def _json_default(value: typing.Any) -> typing.Any:
	if isinstance(value, datetime.datetime):
		if value.tzinfo is not None:
			value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
		return value.isoformat() + "Z"
	return sentry_sdk.utils.safe_repr(value)


def mark_reported(exception: BaseException) -> None:
	"""Remember that ``exception`` has been sent, so its log records give no second event."""
	try:
		setattr(exception, _REPORTED, True)
	except Exception:  # an exception type that takes no attributes
		pass


# -- Installation into asab.web and aiohttp ------------------------------------------------------------------

_active: list[WebInstrumentation] = []
_originals: dict[str, typing.Any] = {}


def install(instrumentation: WebInstrumentation, app: typing.Any = None, hooks: typing.Any = None) -> bool:
	"""
	Make ``instrumentation`` the one used by every asab.web container that starts from now on and by every
	aiohttp ``ClientSession`` created from now on. Does nothing (returns False) unless asab.web is imported.
	``hooks`` (`asab_sentry.tasks.LoopHooks`) are told to leave aiohttp's per-request tasks to the middleware.
	"""
	container_module = sys.modules.get("asab.web.container")
	if container_module is None:
		return False
	if hooks is not None:
		import aiohttp.web_protocol

		hooks.PassThrough.add(aiohttp.web_protocol.RequestHandler._handle_request.__code__)
	_active[:] = [instrumentation]
	if "processor" not in _originals:
		sentry_sdk.scope.add_global_event_processor(_event_processor)
		_originals["processor"] = True
	if "start" not in _originals:
		import aiohttp

		container_class = container_module.WebContainer
		original_start = container_class._start

		async def _start(self, app):
			if _active:
				_active[-1].instrument(self.WebApp)
			return await original_start(self, app)

		original_init = aiohttp.ClientSession.__init__

		@functools.wraps(original_init)
		def __init__(self, *args, **kwargs):
			if _active:
				configs = list(kwargs.get("trace_configs") or [])
				configs.append(_active[-1].trace_config())
				kwargs["trace_configs"] = configs
			original_init(self, *args, **kwargs)

		_originals["start"] = (container_class, original_start)
		_originals["session"] = (aiohttp.ClientSession, original_init)
		container_class._start = _start
		aiohttp.ClientSession.__init__ = __init__
	if app is not None:
		# Containers created before the service (not started yet) are instrumented now.
		try:
			web_service = app.get_service("asab.WebService")
		except Exception:
			web_service = None
		for container in getattr(web_service, "Containers", {}).values():
			if not container.WebApp.frozen:
				instrumentation.instrument(container.WebApp)
	return True


def uninstall() -> None:
	"""Undo `install()` (for tests and the testing kit)."""
	_active.clear()
	if "start" in _originals:
		container_class, original_start = _originals.pop("start")
		container_class._start = original_start
	if "session" in _originals:
		session_class, original_init = _originals.pop("session")
		session_class.__init__ = original_init


def _event_processor(event: dict, hint: dict) -> dict:
	return _active[-1].event_processor(event, hint) if _active else event


def active() -> WebInstrumentation | None:
	return _active[-1] if _active else None


def access_log_crumb(record: logging.LogRecord) -> dict | None:
	"""
	A readable breadcrumb for a record of asab's access log (``asab.web.al``):
	``GET /users/7 → 200 in 12 ms``, with method, path, status and duration as data; None for other records.
	"""
	data = getattr(record, "_struct_data", None)
	if data is None or "al.m" not in data:
		return None
	method, path, status = data["al.m"], data.get("al.p"), data.get("al.c")
	crumb_data = {"method": method, "url": path, "status_code": status}
	duration = data.get("D")
	if duration.__class__ is float:
		milliseconds = duration * 1000
		crumb_data["duration_ms"] = milliseconds
		message = "{} {} → {} in {:.0f} ms".format(method, path, status, milliseconds)
	else:
		message = "{} {} → {}".format(method, path, status)
	level = "info"
	if status.__class__ is int and status >= 400:
		level = "error" if status >= 500 else "warning"
	return {"type": "http", "category": "asab.web.al", "level": level, "message": message, "data": crumb_data}
