"""
Configuration: ``[sentry]``, ``[sentry:logging]``, ``[sentry:web]`` and the ``SENTRY_*`` environment variables,
read once at start-up, validated, and frozen into a `Settings` object.

Nothing else in this package reads `asab.Config`. Every invalid value raises `SentryConfigError`
whose one-line message names ``[section] option``, the value (secrets masked) and what is allowed.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import math
import re
import typing
import urllib.parse

import sentry_sdk.utils

from .errors import SentryConfigError

L = logging.getLogger(__name__)

SECTION = "sentry"
LOGGING_SECTION = "sentry:logging"
WEB_SECTION = "sentry:web"

LOG_NOTICE = 25

#: Logging level names accepted by ``[sentry:logging] breadcrumbs`` and ``events``.
LEVELS: dict[str, int | None] = {
	"debug": logging.DEBUG,
	"info": logging.INFO,
	"notice": LOG_NOTICE,
	"warning": logging.WARNING,
	"error": logging.ERROR,
	"critical": logging.CRITICAL,
	"off": None,
}

SPOTLIGHT_DEFAULT_URL = "http://localhost:8969/stream"

_KNOWN_OPTIONS = {
	SECTION: {
		"data_source_name",
		"environment",
		"release",
		"traces_sample_rate",
		"sample_rate",
		"server_name",
		"max_value_length",
		"include_local_variables",
		"shutdown_timeout",
		"debug",
		"spotlight",
		"scrub_keys",
		"send_default_pii",
		"task_spans",
		# delivery (issue 9)
		"queue_max_size",
		"max_concurrent_requests",
		"request_timeout",
		"outbox",
		"outbox_max_size",
		"outbox_max_age",
		"delivery",
	},
	LOGGING_SECTION: {"breadcrumbs", "events"},
	WEB_SECTION: {"enabled", "failed_status_codes", "ignore_paths", "trace_propagation_targets"},
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_BOOL_ALLOWED = "expected a boolean (true/false, yes/no, on/off, 1/0)"

_INLINE_COMMENT = re.compile(r"\s+[#;].*$")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w|M|y)?$")
_DURATION_UNITS = {
	None: 1.0,
	"ms": 0.001,
	"s": 1.0,
	"m": 60.0,
	"h": 3600.0,
	"d": 86400.0,
	"w": 604800.0,
	"M": 2592000.0,
	"y": 31536000.0,
}
# Everything before the last '@' except a leading scheme ("https://", "https:/", "https:") is the key part.
_DSN_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}")
_ASCII_DIGITS = re.compile(r"^[0-9]+$")
_SCRUB_KEY = re.compile(r"^[A-Za-z0-9_.:-]{2,64}$")
# Unicode White_Space: what Relay trims from environment and release names.
_WHITESPACE = " \t\n\x0b\x0c\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")

#: The smallest accepted ``max_value_length``: sentry-sdk applies it to every string of an event, and ids,
#: timestamps, levels, releases (up to 200 characters) and tag values must stay whole.
MIN_MAX_VALUE_LENGTH = 256

#: Values of ``[sentry] delivery``: the HTTP delivery in threads of the service's process, or in a helper process.
DELIVERY_MODES = ("threads", "process")

#: The longest accepted ``shutdown_timeout`` (seconds).
MAX_SHUTDOWN_TIMEOUT = 3600.0


@dataclasses.dataclass(frozen=True)
class Settings:
	"""
	Validated, immutable configuration of the SentryService.

	Produced by `load_settings()`; see the README for every option and its default.
	"""

	dsn: str | None
	environment: str
	release: str | None
	traces_sample_rate: float
	sample_rate: float
	server_name: str | None
	max_value_length: int
	include_local_variables: bool
	shutdown_timeout: float
	debug: bool
	spotlight: str | None
	breadcrumbs_level: int | None
	events_level: int | None
	unknown_options: tuple[str, ...] = ()
	#: More key terms to filter out of events (``[sentry] scrub_keys``), see `asab_sentry.scrub`.
	scrub_keys: tuple[str, ...] = ()
	#: Environment variables whose value was not valid text (lone surrogates) and was repaired.
	repaired_variables: tuple[str, ...] = ()
	send_default_pii: bool = False
	task_spans: bool = True
	web: WebSettings = dataclasses.field(default_factory=lambda: WebSettings())
	# Delivery (asab_sentry.delivery): bytes, count, seconds, directory, bytes, seconds.
	queue_max_size: int = 16 * 1024 * 1024
	max_concurrent_requests: int = 4
	request_timeout: float = 10.0
	outbox: str | None = None
	outbox_max_size: int = 100 * 1024 * 1024
	outbox_max_age: float = 7 * 86400.0
	#: Where the HTTP delivery runs: ``threads`` of the service's process, or a helper ``process``.
	delivery: str = "threads"

	def __repr__(self) -> str:
		# The DSN's key must not appear in logs, tracebacks or the local variables sent to Sentry.
		fields = []
		for field in dataclasses.fields(self):
			value = getattr(self, field.name)
			if field.name == "dsn" and isinstance(value, str):
				value = mask_dsn(value)
			fields.append("{}={!r}".format(field.name, value))
		return "{}({})".format(type(self).__name__, ", ".join(fields))


def mask_dsn(dsn: str) -> str:
	"""
	Hide the credentials of a DSN so that it can be shown in a message.

	Everything before the last ``@`` except the scheme is hidden, also in a malformed DSN.

	>>> mask_dsn("https://abc123@o1.ingest.sentry.io/42")
	'https://***@o1.ingest.sentry.io/42'
	>>> mask_dsn("abc123@o1.ingest.sentry.io/42")
	'***@o1.ingest.sentry.io/42'
	"""
	if "@" not in dsn:
		return dsn
	userinfo, _, host = dsn.rpartition("@")
	scheme = _DSN_SCHEME.match(userinfo)
	prefix = scheme.group(0) if scheme is not None else ""
	return "{}***@{}".format(prefix, host)


def strip_inline_comment(value: str) -> str:
	"""
	Remove a trailing ``# comment`` (or ``; comment``) that `configparser` keeps in the value.

	>>> strip_inline_comment("info  # logging level")
	'info'
	"""
	return _INLINE_COMMENT.sub("", value).strip()


def parse_bool(section: str, option: str, value: str) -> bool:
	lowered = value.strip().lower()
	if lowered in _TRUE:
		return True
	if lowered in _FALSE:
		return False
	raise SentryConfigError(section, option, value, _BOOL_ALLOWED)


def parse_rate(section: str, option: str, value: str) -> float:
	allowed = "expected a number from 0 to 1 (0.25 means 25 %)"
	try:
		rate = float(value)
	except ValueError:
		raise SentryConfigError(section, option, value, allowed)
	if not (0.0 <= rate <= 1.0):  # also rejects nan
		raise SentryConfigError(section, option, value, allowed)
	return rate


def parse_duration(section: str, option: str, value: str, maximum: float | None = None) -> float:
	"""
	Parse ASAB's duration syntax (``500ms``, ``5s``, ``2m``, ``1h``, a bare number of seconds) into seconds;
	refuse values that are not finite or exceed ``maximum`` seconds.
	"""
	allowed = "expected a duration such as 5s, 500ms, 2m or a number of seconds"
	if maximum is not None:
		allowed += " (at most {:g}s)".format(maximum)
	match = _DURATION.match(value.strip())
	if match is None:
		raise SentryConfigError(section, option, value, allowed)
	seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
	if not math.isfinite(seconds) or (maximum is not None and seconds > maximum):
		raise SentryConfigError(section, option, value, allowed)
	return seconds


def parse_level(section: str, option: str, value: str) -> int | None:
	level = LEVELS.get(value.strip().lower(), -1)
	if level == -1:
		raise SentryConfigError(section, option, value, "expected one of: " + ", ".join(LEVELS))
	return level


def parse_positive_int(section: str, option: str, value: str, minimum: int = 1) -> int:
	"""A whole number of ASCII digits, at least ``minimum``."""
	allowed = "expected a whole number of at least {}".format(minimum)
	text = value.strip()
	if _ASCII_DIGITS.fullmatch(text) is None or len(text) > 18:
		raise SentryConfigError(section, option, value, allowed)
	number = int(text)
	if number < minimum:
		raise SentryConfigError(section, option, value, allowed)
	return number


def parse_scrub_keys(section: str, option: str, value: str) -> tuple[str, ...]:
	"""
	Key terms separated by commas or spaces, each 2–64 characters of letters, digits, ``_.:-`` with at least two
	letters or digits: terms are matched without separators, so ``a-`` would filter every key with an ``a`` in it
	and ``__`` nothing at all.
	"""
	keys = tuple(k for k in re.split(r"[\s,]+", value.strip()) if k)
	for key in keys:
		if _SCRUB_KEY.match(key) is None or len(re.sub(r"[^a-zA-Z0-9]", "", key)) < 2:
			raise SentryConfigError(
				section,
				option,
				value,
				"expected key names separated by commas, each 2-64 letters, digits, '_', '.', ':' or '-' "
				"with at least two letters or digits",
			)
	return keys


_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]?)(i?[bB])?$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(section: str, option: str, value: str) -> int:
	"""
	Parse a size in bytes: a number, optionally with ``kB``, ``MB`` or ``GB`` (powers of 1024; ``KiB`` etc. too).

	>>> parse_size("sentry", "queue_max_size", "16MB")
	16777216
	"""
	match = _SIZE.match(value.strip())
	number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else 0.0
	size = int(number) if math.isfinite(number) else 0  # (a 400-digit number is inf)
	if size <= 0:
		raise SentryConfigError(section, option, value, "expected a size greater than 0 such as 16MB, 512kB or 1048576")
	return size


def parse_dsn(section: str, option: str, value: str) -> str:
	if re.search(
		r"[^\x21-\x7e]", value
	):  # the sender writes the host and key into HTTP headers: a non-ASCII one killed it
		raise SentryConfigError(
			section,
			option,
			mask_dsn(value),
			"expected a DSN such as https://<public key>@<host>/<project id> (printable ASCII only: "
			"an international host name in its xn-- form)",
		)
	try:
		sentry_sdk.utils.Dsn(value)
	except Exception as e:
		raise SentryConfigError(
			section,
			option,
			mask_dsn(value),
			"expected a DSN such as https://<public key>@<host>/<project id> ({})".format(e),
		)
	return value


def parse_spotlight(section: str, option: str, value: str) -> str | None:
	lowered = value.strip().lower()
	if lowered in _FALSE or lowered == "":
		return None
	if lowered in _TRUE:
		return SPOTLIGHT_DEFAULT_URL
	url = value.strip()
	if _is_http_url(url):
		return url
	raise SentryConfigError(
		section,
		option,
		mask_dsn(value),
		"expected true, false or an http(s)://host[:port]/path URL of a Spotlight sidecar "
		"(printable ASCII, no user:password@)",
	)


def _is_http_url(url: str) -> bool:
	"""
	Whether ``url`` is an absolute http(s) URL (scheme in any case) with a host, a valid port (if any), only
	printable ASCII (what `urllib.request` can send: a space, DEL or ``ë`` fails every request) and no
	``user:password@`` (Spotlight takes none; urllib would take it for the host and print it in every failure).
	"""
	if not re.match(r"^https?://[^/]+", url, re.IGNORECASE) or re.search(r"[^\x21-\x7e]", url):
		return False
	try:
		parts = urllib.parse.urlsplit(url)
		port = parts.port  # ValueError for a port that is not a number in 0-65535
	except ValueError:
		return False
	return bool(parts.hostname) and port != 0 and "@" not in parts.netloc and "\\" not in parts.netloc


class _Reader:
	"""Reads raw option values: config first (inline comments removed), then environment variables."""

	def __init__(self, config: configparser.ConfigParser, environ: typing.Mapping[str, str]):
		self.Config = config
		self.Environ = environ
		self.Repaired: list[str] = []

	def config(self, section: str, option: str) -> str | None:
		if not self.Config.has_section(section) or not self.Config.has_option(section, option):
			return None
		try:
			raw = self.Config.get(section, option)
		except (configparser.Error, KeyError, ValueError) as e:
			raise SentryConfigError(section, option, None, "cannot be read: {}".format(e))
		value = strip_inline_comment(raw)
		return value if value != "" else None

	def env(self, *names: str) -> str | None:
		for name in names:
			value = self.Environ.get(name, "").strip()
			if value != "":
				repaired = repair_text(value)
				if repaired != value and name not in self.Repaired:
					self.Repaired.append(name)
				return repaired
		return None


def repair_text(value: str) -> str:
	"""
	Replace lone surrogates (bytes of an environment variable that are not UTF-8) with U+FFFD.

	>>> repair_text("prod\\udce9")
	'prod\\ufffd'
	"""
	if value.isascii() or _SURROGATE.search(value) is None:
		return value
	return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def load_settings(
	config: configparser.ConfigParser, environ: typing.Mapping[str, str], require_dsn: bool = True
) -> Settings:
	"""
	Read and validate the whole configuration.

	Args:
		config: the application's configuration, normally `asab.Config`.
		environ: environment variables, normally `os.environ`.
		require_dsn: when False (the testing kit), a missing DSN is not an error.

	Raises:
		SentryConfigError: on the first invalid or missing value.

	Example:
		>>> import configparser
		>>> c = configparser.ConfigParser()
		>>> c.read_string("[sentry]\\ndata_source_name=https://key@localhost/1\\n")
		>>> load_settings(c, {}).environment
		'production'
	"""
	r = _Reader(config, environ)

	spotlight_raw = r.config(SECTION, "spotlight")
	spotlight_option = SECTION, "spotlight"
	if spotlight_raw is None:
		spotlight_raw = r.env("SENTRY_SPOTLIGHT")
		spotlight_option = "environment", "SENTRY_SPOTLIGHT"
	spotlight = parse_spotlight(*spotlight_option, spotlight_raw) if spotlight_raw is not None else None

	dsn = r.config(SECTION, "data_source_name")
	if dsn is not None:
		dsn = parse_dsn(SECTION, "data_source_name", dsn)
	else:
		dsn = r.env("SENTRY_DSN")
		if dsn is not None:
			dsn = parse_dsn("environment", "SENTRY_DSN", dsn)
	if dsn is None and spotlight is None and require_dsn:
		raise SentryConfigError(
			SECTION,
			"data_source_name",
			None,
			"set the DSN in the configuration ([sentry] data_source_name=https://<key>@<host>/<project>) "
			"or in the SENTRY_DSN environment variable (or enable [sentry] spotlight for local development)",
		)

	def option(name: str, parse, default):
		raw = r.config(SECTION, name)
		return parse(SECTION, name, raw) if raw is not None else default

	environment, environment_source = _first(
		r, ((SECTION, "environment"), ("environment", "SENTRY_ENVIRONMENT"), ("environment", "SITE_ID"))
	)
	if environment is None:
		environment = "production"
	elif not valid_environment(environment):
		raise SentryConfigError(
			*environment_source,
			environment,
			"expected 1 to 64 bytes of text without control characters, '/' or '\\', and not 'none', '.' or '..'",
		)
	environment = environment.strip(_WHITESPACE)

	release, release_source = _first(r, ((SECTION, "release"), ("environment", "SENTRY_RELEASE")))
	if release is not None and not valid_release(release):
		raise SentryConfigError(
			*release_source,
			release,
			"expected 1 to 200 bytes of text without control characters, '/' or '\\', and not 'latest', '.' or '..'",
		)
	if release is not None:
		release = release.strip(_WHITESPACE)

	unknown = tuple(
		"[{}] {}".format(section, name)
		for section, known in _KNOWN_OPTIONS.items()
		if config.has_section(section)
		for name in config.options(section)
		if name not in known and name not in config.defaults()
	)

	return Settings(
		dsn=dsn,
		environment=environment,
		release=release,
		traces_sample_rate=option("traces_sample_rate", parse_rate, 0.0),
		sample_rate=option("sample_rate", parse_rate, 1.0),
		server_name=r.config(SECTION, "server_name"),
		max_value_length=option(
			"max_value_length", lambda *a: parse_positive_int(*a, minimum=MIN_MAX_VALUE_LENGTH), 8192
		),
		include_local_variables=option("include_local_variables", parse_bool, True),
		shutdown_timeout=option("shutdown_timeout", lambda *a: parse_duration(*a, maximum=MAX_SHUTDOWN_TIMEOUT), 10.0),
		debug=option("debug", parse_bool, False),
		spotlight=spotlight,
		breadcrumbs_level=_level(r, "breadcrumbs", logging.INFO),
		events_level=_level(r, "events", logging.ERROR),
		unknown_options=unknown,
		scrub_keys=option("scrub_keys", parse_scrub_keys, ()),
		repaired_variables=tuple(r.Repaired),
		send_default_pii=option("send_default_pii", parse_bool, False),
		task_spans=option("task_spans", parse_bool, True),
		web=_web_settings(r),
		**_delivery_options(r),
	)


def _delivery_options(r: _Reader) -> dict[str, typing.Any]:
	"""The delivery's options (issue 9): queue, concurrency, timeout and the outbox."""

	def option(name: str, parse, default):
		raw = r.config(SECTION, name)
		return parse(SECTION, name, raw) if raw is not None else default

	def positive_duration(section: str, name: str, value: str) -> float:
		seconds = parse_duration(section, name, value)
		if not (0 < seconds < 10**9):
			raise SentryConfigError(section, name, value, "expected a duration greater than 0 such as 10s or 7d")
		return seconds

	def concurrency(section: str, name: str, value: str) -> int:
		number = parse_positive_int(section, name, value)
		if number > 64:
			raise SentryConfigError(section, name, value, "expected a whole number from 1 to 64")
		return number

	outbox = r.config(SECTION, "outbox")

	def mode(section: str, name: str, value: str) -> str:
		value = value.strip().lower()
		if value not in DELIVERY_MODES:
			raise SentryConfigError(section, name, value, "expected one of: {}".format(", ".join(DELIVERY_MODES)))
		if value == "process" and outbox is not None:
			raise SentryConfigError(
				section,
				name,
				value,
				"not with [sentry] outbox (the outbox is written by the service before capture returns; "
				"use delivery = threads)",
			)
		return value

	return {
		"delivery": option("delivery", mode, "threads"),
		"queue_max_size": option("queue_max_size", parse_size, 16 * 1024 * 1024),
		"max_concurrent_requests": option("max_concurrent_requests", concurrency, 4),
		"request_timeout": option("request_timeout", positive_duration, 10.0),
		"outbox": outbox,
		"outbox_max_size": option("outbox_max_size", parse_size, 100 * 1024 * 1024),
		"outbox_max_age": option("outbox_max_age", positive_duration, 7 * 86400.0),
	}


def _first(r: _Reader, sources: tuple[tuple[str, str], ...]) -> tuple[str | None, tuple[str, str]]:
	"""The first value set among config options and environment variables, and where it came from."""
	for source in sources:
		value = r.env(source[1]) if source[0] == "environment" else r.config(*source)
		if value is not None:
			return value, source
	return None, sources[0]


def _valid_name(value: str, max_bytes: int, reserved: tuple[str, ...]) -> bool:
	value = value.strip(_WHITESPACE)
	try:
		size = len(value.encode("utf-8"))
	except UnicodeEncodeError:  # lone surrogates
		return False
	return (
		0 < size <= max_bytes
		and _ASCII_CONTROL.search(value) is None
		and "/" not in value
		and "\\" not in value
		and value.lower() not in reserved
	)


def valid_environment(value: str) -> bool:
	"""
	Sentry's (Relay's) rules for an environment name: after trimming whitespace 1–64 bytes of UTF-8, no ASCII
	control character, no ``/`` or ``\\``, and not ``none`` (any case), ``.`` or ``..``.
	"""
	return _valid_name(value, 64, ("none", ".", ".."))


def valid_release(value: str) -> bool:
	"""
	Sentry's (Relay's) rules for a release name: after trimming whitespace 1–200 bytes of UTF-8, no ASCII
	control character, no ``/`` or ``\\``, and not ``latest`` (any case), ``.`` or ``..``.
	"""
	return _valid_name(value, 200, ("latest", ".", ".."))


def _level(r: _Reader, name: str, default: int) -> int | None:
	raw = r.config(LOGGING_SECTION, name)
	return parse_level(LOGGING_SECTION, name, raw) if raw is not None else default


# [sentry:web] --------------------------------------------------------------------------------------------------

#: Paths never traced, whatever ``[sentry:web] ignore_paths`` adds: asab's own API (health, manifest, config).
WEB_IGNORED_ALWAYS = ("/asab/v1/*",)

#: Named host classes of ``[sentry:web] trace_propagation_targets``; see `asab_sentry.web.PropagationTargets`.
HOST_CLASSES = ("loopback", "private", "single-label", "cluster-local")
WEB_PROPAGATION_DEFAULT = ", ".join(HOST_CLASSES)

_STATUS_RANGE = re.compile(r"^(\d{3})(?:-(\d{3}))?$")


@dataclasses.dataclass(frozen=True)
class WebSettings:
	"""
	Validated ``[sentry:web]`` section: the asab.web instrumentation (`asab_sentry.web`).

	Attributes:
		enabled: instrument every asab.web container (default True).
		failed_status_codes: response statuses that give an error event (default 500-599).
		ignore_paths: glob patterns of request paths with no transaction (``/asab/v1/*`` always included).
		trace_propagation_targets: host classes (``loopback``, ``private``, ``single-label``,
			``cluster-local``), host globs (``*.example.internal``), IP networks (``10.1.0.0/16``) or ``*``;
			outgoing requests to these hosts get ``sentry-trace`` and ``baggage`` headers.
	"""

	enabled: bool = True
	failed_status_codes: frozenset[int] = frozenset(range(500, 600))
	ignore_paths: tuple[str, ...] = WEB_IGNORED_ALWAYS
	trace_propagation_targets: tuple[str, ...] = HOST_CLASSES


def parse_status_codes(section: str, option: str, value: str) -> frozenset[int]:
	"""
	Parse HTTP status codes and ranges: ``404, 500-599``. An empty value means none.

	>>> sorted(parse_status_codes("sentry:web", "failed_status_codes", "404, 502-503"))
	[404, 502, 503]
	"""
	allowed = "expected HTTP status codes (100-599) and ranges separated by commas, such as '404, 500-599'"
	codes: set[int] = set()
	for part in re.split(r"[,\s]+", re.sub(r"\s*-\s*", "-", value)):
		if not part:
			continue
		match = _STATUS_RANGE.match(part)
		if match is None:
			raise SentryConfigError(section, option, value, allowed)
		low = int(match.group(1))
		high = int(match.group(2) or low)
		if not (100 <= low <= high <= 599):
			raise SentryConfigError(section, option, value, allowed)
		codes.update(range(low, high + 1))
	return frozenset(codes)


def parse_list(value: str) -> tuple[str, ...]:
	"""Comma- or whitespace-separated items, in order, without duplicates."""
	items: list[str] = []
	for item in re.split(r"[,\s]+", value):
		if item and item not in items:
			items.append(item)
	return tuple(items)


def parse_ignore_paths(section: str, option: str, value: str) -> tuple[str, ...]:
	paths = parse_list(value)
	for path in paths:
		if not path.startswith(("/", "*")):
			raise SentryConfigError(
				section, option, value, "expected glob patterns of request paths starting with '/', such as /health"
			)
	return WEB_IGNORED_ALWAYS + tuple(p for p in paths if p not in WEB_IGNORED_ALWAYS)


def parse_propagation_targets(section: str, option: str, value: str) -> tuple[str, ...]:
	import ipaddress

	targets = parse_list(value.lower())
	if targets in (("none",), ("off",), ("false",)):
		return ()
	for target in targets:
		if target in ("none", "off", "false"):
			# Beside other entries it would be a host glob matching a host named "none": say what was meant.
			raise SentryConfigError(
				section,
				option,
				value,
				"'{}' (propagation off) stands alone; list only the hosts to reach".format(target),
			)
		if target in HOST_CLASSES or target == "*":
			continue
		if "/" in target:
			try:
				ipaddress.ip_network(target, strict=False)
				continue
			except ValueError:
				pass
		elif re.match(r"^[a-z0-9*?\[\]_.:-]+$", target):
			continue
		raise SentryConfigError(
			section,
			option,
			value,
			"expected 'none' or a list of {}, host name globs such as *.example.internal, IP networks such as "
			"10.0.0.0/8, or '*'".format(", ".join(HOST_CLASSES)),
		)
	return targets


def _web_settings(r: _Reader) -> WebSettings:
	def option(name: str, parse, default):
		raw = r.config(WEB_SECTION, name)
		return parse(WEB_SECTION, name, raw) if raw is not None else default

	defaults = WebSettings()
	return WebSettings(
		enabled=option("enabled", parse_bool, defaults.enabled),
		failed_status_codes=option("failed_status_codes", parse_status_codes, defaults.failed_status_codes),
		ignore_paths=option("ignore_paths", parse_ignore_paths, defaults.ignore_paths),
		trace_propagation_targets=_propagation_targets(r),
	)


def _propagation_targets(r: _Reader) -> tuple[str, ...]:
	# An empty value is read as unset by _Reader; "none" switches propagation off.
	raw = r.config(WEB_SECTION, "trace_propagation_targets")
	if raw is None:
		return HOST_CLASSES
	return parse_propagation_targets(WEB_SECTION, "trace_propagation_targets", raw)
