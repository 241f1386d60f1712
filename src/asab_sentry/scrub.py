"""
What goes out, part one: text Sentry can parse and no secrets.

- **Text.** A Python `str` can hold lone surrogates (``os.fsdecode`` of a file name that is not UTF-8,
  ``surrogateescape`` decoding of an HTTP header byte 0xFF). JSON cannot carry them: Relay rejects the whole
  event (``InvalidJsonError: lone leading surrogate``). `sanitize_text` replaces each with U+FFFD.
- **Secrets.** A key is secret when, lowercased and with everything but letters and digits removed, it
  contains one of `DENYLIST_TERMS` (so ``db_password``, ``X-Api-Key``, ``accessToken`` match), or when one of
  its words is one of `DENYLIST_WORDS` (short terms that would match inside ordinary words as substrings:
  ``auth`` but not ``author``). Its value becomes ``[Filtered]``. ``[sentry] scrub_keys`` adds terms.

The functions work on plain JSON-like data (dicts, lists, strings, numbers), i.e. an event as sentry-sdk
has serialized it. `scrub_request` is for request data (headers, cookies, query string, body) and may be
used by any code that builds a request interface.

Example:
	>>> s = Scrubber()
	>>> s.scrub_mapping({"Authorization": "Bearer x", "Accept": "*/*", "db_password": "y"})
	{'Authorization': '[Filtered]', 'Accept': '*/*', 'db_password': '[Filtered]'}
	>>> sanitize_text("caf\\udce9")
	'caf\\ufffd'
"""

from __future__ import annotations

import json
import operator
import re
import typing
import urllib.parse

#: What a secret value is replaced with (Sentry's own marker).
FILTERED = "[Filtered]"

#: Terms that mark a key as secret wherever they occur in it (after lowercasing and removing separators).
DENYLIST_TERMS = (
	"password",
	"passwd",
	"secret",
	"token",
	"apikey",
	"authorization",
	"cookie",
	"session",
	"privatekey",
	"credential",
	"csrf",
	"xsrf",
	"mysqlpwd",
)

#: Short terms that mark a key as secret only as a whole word of it (``auth``, ``x_auth``, ``authKey``).
DENYLIST_WORDS = ("auth", "pwd", "pass", "dsn", "sid", "jwt", "bearer")

# Keys whose string value is a query string or a URL: scrubbed per parameter, not as a whole.
_QUERY_KEYS = frozenset({"query_string", "http.query", "query"})
_URL_KEYS = frozenset({"url", "http.url"})

_SURROGATE = re.compile("[\ud800-\udfff]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_URL_USERINFO = re.compile(r"(?<=://)([^/@\s:]*):([^/@\s]*)@")
_ARGV_OPTION = re.compile(r"^(-{0,2}[^=\s]+)(=)(.*)$", re.DOTALL)  # --key=value, and KEY=value (make, env style)

# Deeper than this, free-form data is cut (Relay refuses JSON nested much deeper than ~128 levels).
MAX_DEPTH = 32


def sanitize_text(text: str) -> str:
	"""
	Replace lone surrogates with U+FFFD; a valid surrogate pair becomes the character it encodes.

	>>> sanitize_text("report-\\udce9t\\udce9.csv")
	'report-\\ufffdt\\ufffd.csv'
	"""
	if text.isascii() or _SURROGATE.search(text) is None:
		return text
	return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def has_surrogates(text: str) -> bool:
	"""True when ``text`` holds a surrogate code point (i.e. it cannot be encoded to UTF-8)."""
	return not text.isascii() and _SURROGATE.search(text) is not None


def sanitize(data: typing.Any, depth: int = 0) -> typing.Any:
	"""
	Plain JSON-like data with every string (keys included) passed through `sanitize_text`.

	Containers are copied only where something changed. Data nested deeper than `MAX_DEPTH` is replaced by
	a placeholder string.
	"""
	if isinstance(data, str):
		return sanitize_text(data)
	if depth > MAX_DEPTH and isinstance(data, (dict, list)):
		return "[too deep]"
	if isinstance(data, dict):
		changed = False
		result = {}
		for key, value in data.items():
			new_key = sanitize_text(key) if isinstance(key, str) else key
			new_value = sanitize(value, depth + 1)
			changed = changed or new_key is not key or new_value is not value
			result[new_key] = new_value
		return result if changed else data
	if isinstance(data, list):
		items = [sanitize(value, depth + 1) for value in data]
		return items if any(a is not b for a, b in zip(items, data, strict=True)) else data
	return data


def _words(key: str) -> list[str]:
	return [w for w in _NON_ALNUM.split(_CAMEL.sub(r"\1_\2", key).lower()) if w]


class Scrubber:
	"""
	Decides which keys are secret and filters their values out of event data.

	Args:
		extra_terms: more terms (``[sentry] scrub_keys``); matched like `DENYLIST_TERMS`.
	"""

	def __init__(self, extra_terms: typing.Iterable[str] = ()) -> None:
		terms = list(DENYLIST_TERMS)
		for term in extra_terms:
			compact = "".join(_words(str(term)))
			if compact and compact not in terms:
				terms.append(compact)
		self.Terms = tuple(terms)
		self.Words = frozenset(DENYLIST_WORDS)
		self._terms = re.compile("|".join(re.escape(t) for t in sorted(self.Terms, key=len, reverse=True)))
		self._cache: dict[str, bool] = {}
		self._argv: tuple[list, list] | None = None  # sys.argv as it came and scrubbed: the same in every event

	def is_secret(self, key: object) -> bool:
		"""
		True when values under ``key`` must not be sent.

		>>> s = Scrubber(["ssn"])
		>>> [s.is_secret(k) for k in ("db_password", "X-Api-Key", "authKey", "author", "user_ssn", "name")]
		[True, True, True, False, True, False]
		"""
		if not isinstance(key, str):
			return False
		cached = self._cache.get(key)
		if cached is not None:
			return cached
		words = _words(key)
		secret = self._terms.search("".join(words)) is not None or any(w in self.Words for w in words)
		if len(self._cache) > 10000:
			self._cache.clear()
		self._cache[key] = secret
		return secret

	# Free-form data

	def scrub(self, data: typing.Any, depth: int = 0) -> typing.Any:
		"""
		A copy of JSON-like ``data`` in which the value of every secret key, at any depth, is `FILTERED`;
		query strings and URLs under keys such as ``query_string`` and ``url`` are scrubbed per parameter.
		Data deeper than `MAX_DEPTH` is replaced by a placeholder. Unchanged containers are returned as they are.
		"""
		if depth > MAX_DEPTH and isinstance(data, (dict, list)):
			return "[too deep]"
		if isinstance(data, dict):
			changed = False
			result = {}
			known = self._cache  # is_secret's answers (every event has the same few keys): looked up inline
			for key, value in data.items():
				# (A str subclass is asked too: aiohttp's header names, multidict's istr, in asab.web's log lines.)
				secret = known.get(key) if type(key) is str else self.is_secret(key)
				if secret is None:
					secret = self.is_secret(key)
				if secret and value is not None and value != "":
					new_value: typing.Any = FILTERED
				elif isinstance(value, str):
					new_value = self._scrub_string(key, value) if key in _QUERY_KEYS or key in _URL_KEYS else value
				elif isinstance(value, (dict, list)):
					new_value = self.scrub(value, depth + 1)
				else:
					new_value = value
				changed = changed or new_value is not value
				result[key] = new_value
			return result if changed else data
		if isinstance(data, list):
			# Only containers can change (a method call each); other items are kept as they are.
			items = [self.scrub(value, depth + 1) if isinstance(value, (dict, list)) else value for value in data]
			return items if any(map(operator.is_not, items, data)) else data
		return data

	def _scrub_string(self, key: object, value: str) -> str:
		if key in _QUERY_KEYS:
			return self.scrub_query(value)
		if key in _URL_KEYS:
			return self.scrub_url(value)
		return value

	def scrub_mapping(self, mapping: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
		"""
		A copy of a mapping (e.g. request headers) with the values of secret keys filtered, recursively.

		>>> Scrubber().scrub_mapping({"X-Auth-Token": "abc", "Host": "example.com"})
		{'X-Auth-Token': '[Filtered]', 'Host': 'example.com'}
		"""
		return self.scrub(dict(mapping))

	def scrub_query(self, query: str) -> str:
		"""
		A query string (``a=1&token=x``) with the values of secret parameters filtered; the rest of the text is
		kept as it was.

		>>> Scrubber().scrub_query("page=2&access_token=abc")
		'page=2&access_token=[Filtered]'
		"""
		if "=" not in query:
			return query
		parts = query.split("&")
		changed = False
		for index, part in enumerate(parts):
			name, separator, value = part.partition("=")
			if separator and value != FILTERED and self.is_secret(urllib.parse.unquote_plus(name)):
				parts[index] = name + separator + FILTERED
				changed = True
		return "&".join(parts) if changed else query

	def scrub_url(self, url: str) -> str:
		"""
		A URL with a password in it (``https://user:pass@host``) and secret query parameters filtered.

		>>> Scrubber().scrub_url("https://bob:hunter2@db.example/x?token=1&page=2")
		'https://bob:[Filtered]@db.example/x?token=[Filtered]&page=2'
		"""
		url = _URL_USERINFO.sub(lambda m: "{}:{}@".format(m.group(1), FILTERED), url)
		base, question, query = url.partition("?")
		if question:
			fragment = ""
			if "#" in query:
				query, fragment = query.split("#", 1)
				fragment = "#" + fragment
			return base + "?" + self.scrub_query(query) + fragment
		return url

	def scrub_argv(self, argv: list[typing.Any]) -> list[typing.Any]:
		"""
		Command-line arguments with secret options filtered: ``--db-password=x``, ``--token x`` and ``DB_PASSWORD=x``.

		>>> Scrubber().scrub_argv(["app.py", "--db-password=x", "--token", "y", "-v"])
		['app.py', '--db-password=[Filtered]', '--token', '[Filtered]', '-v']
		"""
		result = []
		hide_next = False
		for arg in argv:
			if not isinstance(arg, str):
				result.append(arg)
				hide_next = False
				continue
			if hide_next and not arg.startswith("-"):
				result.append(FILTERED)
				hide_next = False
				continue
			hide_next = False
			match = _ARGV_OPTION.match(arg)
			if match is not None and self.is_secret(match.group(1)):
				result.append(match.group(1) + "=" + FILTERED)
			elif arg.startswith("-") and self.is_secret(arg):
				result.append(arg)
				hide_next = True
			else:
				result.append(self.scrub_url(arg) if "://" in arg else arg)
		return result

	def scrub_request(self, request: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
		"""
		Sentry's request interface (``url``, ``method``, ``headers``, ``cookies``, ``query_string``, ``data``,
		``env``) with secrets filtered: secret headers and env keys, every cookie value, secret query
		parameters, and secret keys in a body given as a mapping, as JSON text or as a form-encoded string.

		>>> Scrubber().scrub_request({"headers": {"Cookie": "s=1"}, "query_string": "token=a", "data": '{"password": "p"}'})
		{'headers': {'Cookie': '[Filtered]'}, 'query_string': 'token=[Filtered]', 'data': '{"password": "[Filtered]"}'}
		"""
		result = dict(request)
		for name in ("headers", "env"):
			value = result.get(name)
			if isinstance(value, dict):
				result[name] = self.scrub(value)
			elif isinstance(value, list):  # [[name, value], ...]
				result[name] = [
					[pair[0], FILTERED]
					if isinstance(pair, list) and len(pair) == 2 and self.is_secret(pair[0])
					else pair
					for pair in value
				]
		cookies = result.get("cookies")
		if isinstance(cookies, dict):
			result["cookies"] = {k: FILTERED for k in cookies}
		elif isinstance(cookies, list):
			result["cookies"] = [[p[0], FILTERED] if isinstance(p, list) and len(p) == 2 else p for p in cookies]
		elif isinstance(cookies, str) and cookies:
			result["cookies"] = FILTERED
		query = result.get("query_string")
		if isinstance(query, str):
			result["query_string"] = self.scrub_query(query)
		elif isinstance(query, (dict, list)):
			result["query_string"] = self.scrub(query)
		if isinstance(result.get("url"), str):
			result["url"] = self.scrub_url(result["url"])
		if "data" in result:
			result["data"] = self.scrub_body(result["data"])
		return result

	def scrub_body(self, body: typing.Any) -> typing.Any:
		"""A request body: a mapping/list, JSON text or form-encoded text with secret keys filtered."""
		if isinstance(body, (dict, list)):
			return self.scrub(body)
		if not isinstance(body, str) or not body:
			return body
		stripped = body.lstrip()
		if stripped[:1] in ("{", "["):
			try:
				parsed = json.loads(body)
			except ValueError:
				return body
			scrubbed = self.scrub(parsed)
			return body if scrubbed is parsed else json.dumps(scrubbed)
		if "=" in body and not any(c.isspace() for c in body):
			return self.scrub_query(body)
		return body

	# Whole events

	def _scrub_context(self, name: str, value: typing.Any) -> typing.Any:
		if not isinstance(value, dict):
			return value
		if self.is_secret(name):
			# A context must stay an object: every value of a secret-named one is filtered, its keys kept.
			return {k: v if k == "type" or v is None else FILTERED for k, v in value.items()}
		return self.scrub(value)

	def scrub_breadcrumb(self, crumb: typing.Any) -> typing.Any:
		"""A serialized breadcrumb with its data scrubbed: ``crumb`` itself when nothing changed, else a copy."""
		if isinstance(crumb, dict) and isinstance(crumb.get("data"), dict):
			data = self.scrub(crumb["data"])
			if data is not crumb["data"]:
				return dict(crumb, data=data)
		return crumb

	def scrub_event(self, event: dict[str, typing.Any], breadcrumbs: bool = True) -> dict[str, typing.Any]:
		"""
		Filter secrets everywhere data enters a serialized event: ``extra`` (``sys.argv`` included),
		``contexts``, breadcrumb data (unless ``breadcrumbs`` is False: the caller does them with
		`scrub_breadcrumb`), frame local variables, ``request``, ``user``, ``tags`` and span data.
		Modifies and returns ``event``; a breadcrumb is replaced by a copy, never modified (serialized
		breadcrumbs may be shared by several events, see breadcrumbs.py).
		"""
		extra = event.get("extra")
		if isinstance(extra, dict):
			extra = self.scrub(extra)
			argv = extra.get("sys.argv")
			if isinstance(argv, list):
				extra = dict(extra)
				plain = all(type(arg) is str for arg in argv)
				known = self._argv
				if not plain or known is None or known[0] != argv:
					known = (list(argv), self.scrub_argv(argv))
					if plain:
						self._argv = known
				extra["sys.argv"] = list(known[1])
			event["extra"] = extra
		contexts = event.get("contexts")
		if isinstance(contexts, dict):
			event["contexts"] = {name: self._scrub_context(name, value) for name, value in contexts.items()}
		for name in ("user",):
			if isinstance(event.get(name), dict):
				event[name] = self.scrub(event[name])
		tags = event.get("tags")
		if isinstance(tags, dict):
			event["tags"] = {k: FILTERED if self.is_secret(k) and v else v for k, v in tags.items()}
		if isinstance(event.get("request"), dict):
			event["request"] = self.scrub_request(event["request"])
		crumbs = event.get("breadcrumbs") if breadcrumbs else None
		values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
		if isinstance(values, list):
			for index, crumb in enumerate(values):
				values[index] = self.scrub_breadcrumb(crumb)
		for frame in iter_frames(event):
			if isinstance(frame.get("vars"), dict):
				frame["vars"] = self.scrub(frame["vars"])
		spans = event.get("spans")
		if isinstance(spans, list):
			for span in spans:
				if isinstance(span, dict) and isinstance(span.get("data"), dict):
					span["data"] = self.scrub(span["data"])
		return event


def iter_frames(event: dict[str, typing.Any]) -> typing.Iterator[dict[str, typing.Any]]:
	"""Every stack frame of a serialized event (exceptions, threads, the top-level stacktrace)."""
	stacktraces = []
	for section in ("exception", "threads"):
		container = event.get(section)
		values = container.get("values") if isinstance(container, dict) else None
		if isinstance(values, list):
			stacktraces.extend(v.get("stacktrace") for v in values if isinstance(v, dict))
	stacktraces.append(event.get("stacktrace"))
	for stacktrace in stacktraces:
		if isinstance(stacktrace, dict) and isinstance(stacktrace.get("frames"), list):
			for frame in stacktrace["frames"]:
				if isinstance(frame, dict):
					yield frame


_active = Scrubber()


def active() -> Scrubber:
	"""The scrubber in use: the default denylist plus ``[sentry] scrub_keys`` of the running SentryService."""
	return _active


def configure(extra_terms: typing.Iterable[str] = ()) -> Scrubber:
	"""Make a scrubber with ``extra_terms`` the one in use (called by SentryService at start-up); return it."""
	global _active
	_active = Scrubber(extra_terms)
	return _active


def scrub_headers(headers: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
	"""
	Request or response headers (or cookies, query parameters: any flat mapping) with secret values filtered,
	by the same rules as events and ``[sentry] scrub_keys`` (for code that builds request data itself).

	>>> scrub_headers({"Authorization": "Bearer abc", "Content-Type": "text/plain"})
	{'Authorization': '[Filtered]', 'Content-Type': 'text/plain'}
	"""
	return _active.scrub_mapping(headers)


def scrub_request(request: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
	"""`Scrubber.scrub_request` of the scrubber in use: Sentry's request interface with secrets filtered."""
	return _active.scrub_request(request)
