"""
The only module that touches sentry-sdk internals (private names). Each use is pinned by a test in
``tests/test_sdk_internals.py`` so that a sentry-sdk upgrade that changes them fails loudly.
"""

from __future__ import annotations

import collections
import contextvars
import copy
import datetime
import itertools
import logging
import operator
import os
import threading
import time
import typing

import sentry_sdk
import sentry_sdk.client
import sentry_sdk.scope
import sentry_sdk.serializer
import sentry_sdk.utils

from . import serialize as fast_serialize


def reset() -> None:
	"""
	Return sentry-sdk to its never-initialized state: close the client, drop the global scope and the
	current thread's isolation and current scopes. For tests and for the testing kit's teardown.
	"""
	client = sentry_sdk.get_client()
	if client.is_active():
		client.close(timeout=2.0)
	sentry_sdk.scope._global_scope = None  # type: ignore[attr-defined]
	sentry_sdk.scope._isolation_scope.set(None)  # type: ignore[attr-defined]
	sentry_sdk.scope._current_scope.set(None)  # type: ignore[attr-defined]
	quiet_internal_logger(False)
	use_fast_serializer(False)
	use_source_cache(False)
	use_breadcrumb_order(None)


def quiet_internal_logger(quiet: bool) -> None:
	"""
	Keep sentry-sdk's internal logger (``sentry_sdk.errors``) from building a record for every internal debug
	message when ``debug`` is off (quiet), or give it back sentry-sdk's own level DEBUG.

	sentry-sdk leaves that logger at DEBUG and drops the records afterwards in a filter unless ``debug`` is on,
	so each internal ``logger.debug()`` (two per transaction) costs a full LogRecord. Quiet, the logger is at
	WARNING: the records sentry-sdk would have dropped are not made; warnings and errors still are (and reach
	`InternalErrorRecorder`).
	"""
	sentry_sdk.utils.logger.setLevel(logging.WARNING if quiet else logging.DEBUG)


class InternalErrorRecorder(logging.Filter):
	"""
	Records the errors sentry-sdk swallows (``Internal error in sentry_sdk`` and friends).

	sentry-sdk logs them on its ``sentry_sdk.errors`` logger, behind a filter that drops them unless
	``debug`` is on; this filter is put in front of it so it sees every record, and passes them on.
	"""

	def __init__(self) -> None:
		super().__init__()
		self.Records: list[logging.LogRecord] = []

	def filter(self, record: logging.LogRecord) -> bool:
		if record.levelno >= logging.ERROR:
			self.Records.append(record)
		return True

	def install(self) -> None:
		sentry_sdk.utils.logger.filters.insert(0, self)

	def uninstall(self) -> None:
		if self in sentry_sdk.utils.logger.filters:
			sentry_sdk.utils.logger.removeFilter(self)


def finished_child_spans(transaction: typing.Any) -> list:
	"""The finished spans recorded under ``transaction`` (sentry-sdk keeps them in a private recorder)."""
	recorder = getattr(transaction, "_span_recorder", None)
	if recorder is None:
		return []
	return [span for span in recorder.spans if span is not transaction and span.timestamp is not None]


def span_tags_and_data(span: typing.Any) -> tuple[dict, dict]:
	"""The tags and data set on a span (``set_tag``, ``set_data``, ``set_http_status``), which it keeps privately."""
	return span._tags, span._data


def scope_data() -> tuple[dict, dict | None, dict]:
	"""
	Tags, user and contexts of the global, isolation and current scopes merged (later wins), as sentry-sdk
	would apply them to an event.
	"""
	tags: dict = {}
	user: dict | None = None
	contexts: dict = {}
	for scope in (sentry_sdk.get_global_scope(), sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
		tags.update(scope._tags)  # type: ignore[attr-defined]
		if scope._user:  # type: ignore[attr-defined]
			user = dict(scope._user)  # type: ignore[attr-defined]
		contexts.update(scope._contexts)  # type: ignore[attr-defined]
	return tags, user, contexts


class own_isolation_scope:
	"""
	Run a block in a fork of the isolation scope only (`sentry_sdk.isolation_scope()` forks the current scope
	too: twice the copying, on every web request). Tags, user, contexts and breadcrumbs set in the block stay
	in it. Not for blocks that set a span: that lives in the current scope.
	"""

	__slots__ = ("_token",)

	def __enter__(self) -> None:
		self._token = fork_isolation_scope()

	def __exit__(self, *exc_info: typing.Any) -> None:
		sentry_sdk.scope._isolation_scope.reset(self._token)  # type: ignore[attr-defined]


_ISOLATION_SCOPE: contextvars.ContextVar = sentry_sdk.scope._isolation_scope  # type: ignore[attr-defined]
_CURRENT_SCOPE: contextvars.ContextVar = sentry_sdk.scope._current_scope  # type: ignore[attr-defined]


class _Probe:
	"""A value whose copies say how they were made: how ``Scope.__copy__`` treats the attribute holding it."""

	__slots__ = ("How",)

	def __init__(self, how: str = "kept") -> None:
		self.How = how

	def copy(self) -> _Probe:
		return _Probe("method")

	def __copy__(self) -> _Probe:
		return _Probe("copy")

	def __deepcopy__(self, memo: typing.Any) -> _Probe:
		return _Probe("deepcopy")

	# ``dict(value)`` and ``list(value)`` (older sentry-sdk versions) give a dict or list holding the probe itself.

	def keys(self) -> list[_Probe]:
		return [self]

	def __getitem__(self, key: typing.Any) -> _Probe:
		return self

	def __iter__(self) -> typing.Iterator[_Probe]:
		return iter((self,))


def _scope_copier() -> typing.Callable[[typing.Any], typing.Any] | None:
	"""
	A function making the same copy of a `sentry_sdk.Scope` as its ``__copy__`` (what ``Scope.fork()`` does), in
	straight-line code without ``copy.copy``'s look-up and with ``deepcopy`` only for a value that is not None
	(``_flags``, None unless feature flags were recorded): ~0.5 instead of ~0.7 µs alone.

	Learnt from the installed sentry-sdk: ``__copy__`` is run once on a scope whose every attribute holds a `_Probe`,
	which tells whether the attribute is shared, copied (``.copy()``, ``copy.copy()``, ``dict()``, ``list()``) or
	deep-copied; then
	the function is checked against ``__copy__`` on a scope with content. None (use ``__copy__``) for anything else.
	"""
	scope_class = sentry_sdk.Scope
	slots = [name for klass in scope_class.__mro__ for name in getattr(klass, "__slots__", ())]
	if not slots or "__dict__" in slots or len(set(slots)) != len(slots):
		return None
	probe = object.__new__(scope_class)
	try:
		for name in slots:
			setattr(probe, name, _Probe())
	except Exception:  # a slot that cannot be set by its name (name-mangled): not learnt
		return None
	try:
		copied = probe.__copy__()
	except Exception:
		return None
	lines = ["def fork(self):", "\tcopied = new(scope_class)"]
	for name in slots:
		if not name.isidentifier():
			return None
		value = getattr(copied, name, None)
		original = getattr(probe, name)
		if value is original:
			lines.append("\tcopied.{0} = self.{0}".format(name))
		elif type(value) is dict and value == {original: original}:
			lines.append("\tcopied.{0} = dict(self.{0})".format(name))
		elif type(value) is list and value == [original]:
			lines.append("\tcopied.{0} = list(self.{0})".format(name))
		elif type(value) is not _Probe:
			return None
		elif value.How == "method":
			lines.append("\tcopied.{0} = self.{0}.copy()".format(name))
		elif value.How == "copy":
			lines.append("\tcopied.{0} = shallow(self.{0})".format(name))
		elif value.How == "deepcopy":
			lines.append("\tvalue = self.{}".format(name))
			lines.append("\tcopied.{} = None if value is None else deep(value)".format(name))
		else:
			return None
	lines.append("\treturn copied")
	# A value the probe did not stand for (an attribute None where ``__copy__`` tests it first, say): the copy
	# ``__copy__`` makes, never an error.
	body = ["\t" + line for line in lines[1:]]
	# A subclass of Scope (its own slots, its own ``__copy__``): copied by its ``__copy__``, as ``Scope.fork()`` does.
	lines = [lines[0], "\tif self.__class__ is not scope_class:", "\t\treturn self.__copy__()", "\ttry:", *body]
	lines += ["\texcept Exception:", "\t\treturn self.__copy__()"]
	namespace: dict[str, typing.Any] = {
		"new": object.__new__,
		"shallow": copy.copy,
		"deep": copy.deepcopy,
		"scope_class": scope_class,
	}
	exec("\n".join(lines), namespace)  # noqa: S102 - code made above from the attribute names only
	fork = namespace["fork"]
	# Checked on a scope with content: the same values, shared and copied alike.
	sample = scope_class()
	try:
		sample.set_tag("t", "v")
		sample.set_context("c", {"k": 1})
		sample.set_extra("e", [1])
		sample.set_user({"id": "u"})
		sample.add_breadcrumb({"message": "m"})
		sample.add_event_processor(lambda event, hint: event)
		mine, theirs = fork(sample), sample.__copy__()
		for name in slots:
			original, a, b = getattr(sample, name), getattr(mine, name), getattr(theirs, name)
			if type(a) is not type(b) or (a is original) != (b is original):
				return None
			if not callable(a) and a != b and repr(a) != repr(b):
				return None
	except Exception:
		return None
	return fork


#: ``Scope.__copy__``, or the same copy made faster (`_scope_copier`).
def _own_copy(scope: typing.Any) -> typing.Any:
	return scope.__copy__()  # a subclass's own __copy__ too, as ``Scope.fork()`` (``copy.copy``) would


copy_scope: typing.Callable[[typing.Any], typing.Any] = _scope_copier() or _own_copy


def fork_isolation_scope() -> contextvars.Token:
	"""`own_isolation_scope` without the context manager (a hot path): returns the token for the restore."""
	scope = _ISOLATION_SCOPE.get() or sentry_sdk.Scope.get_isolation_scope()
	return _ISOLATION_SCOPE.set(copy_scope(scope))


def restore_isolation_scope(token: contextvars.Token) -> None:
	"""End the fork `fork_isolation_scope` started."""
	sentry_sdk.scope._isolation_scope.reset(token)  # type: ignore[attr-defined]


def fork_scopes() -> tuple[contextvars.Token, contextvars.Token, typing.Any]:
	"""
	`sentry_sdk.isolation_scope()` without the context manager (a hot path): the current and the isolation scope
	forked. Returns the tokens for `restore_scopes` and the forked current scope.
	"""
	current = copy_scope(_CURRENT_SCOPE.get() or sentry_sdk.Scope.get_current_scope())
	current_token = _CURRENT_SCOPE.set(current)
	isolation_token = _ISOLATION_SCOPE.set(copy_scope(_ISOLATION_SCOPE.get() or sentry_sdk.Scope.get_isolation_scope()))
	return current_token, isolation_token, current


def restore_scopes(tokens: tuple[contextvars.Token, contextvars.Token, typing.Any]) -> None:
	"""End the forks `fork_scopes` started."""
	sentry_sdk.scope._current_scope.reset(tokens[0])  # type: ignore[attr-defined]
	sentry_sdk.scope._isolation_scope.reset(tokens[1])  # type: ignore[attr-defined]


def append_breadcrumb(crumb: dict[str, typing.Any], max_breadcrumbs: int, global_scope: bool = False) -> None:
	"""
	Add a ready breadcrumb to the isolation scope (or the global scope), as ``Scope.add_breadcrumb`` does, minus
	what this package does not use on its hot path: ``before_breadcrumb`` (callers use `sentry_sdk.add_breadcrumb`
	when it is set), copying the dict, and looking up the client's options (callers pass ``max_breadcrumbs``).
	"""
	if global_scope:
		scope = sentry_sdk.get_global_scope()
	else:
		# sentry-sdk's isolation-scope variable read directly (what ``Scope.get_isolation_scope`` does, without its
		# class-method call): this runs for every log record kept as a breadcrumb.
		scope = _ISOLATION_SCOPE.get() or sentry_sdk.Scope.get_isolation_scope()
	crumbs = scope._breadcrumbs
	crumbs.append(crumb)
	while len(crumbs) > max_breadcrumbs:
		crumbs.popleft()
		scope._n_breadcrumbs_truncated += 1


def serialize_breadcrumb(crumb: dict[str, typing.Any], options: dict[str, typing.Any]) -> tuple[dict, dict | None]:
	"""
	One breadcrumb serialized exactly as sentry-sdk serializes it inside an event (a databag under
	``breadcrumbs.values.N``, trimmed by the client's options), and the ``_meta`` it would get there (or None).
	"""
	event = {"breadcrumbs": {"values": [crumb]}}
	out = fast_serialize.serialize_event(
		event,
		max_value_length=options.get("max_value_length"),
		max_request_body_size=options.get("max_request_body_size"),
	)
	if out is None:
		out = sentry_sdk.serializer.serialize(
			event,
			max_request_body_size=options.get("max_request_body_size"),
			max_value_length=options.get("max_value_length"),
			custom_repr=options.get("custom_repr"),
		)
	meta = out.get("_meta", {}).get("breadcrumbs", {}).get("values", {}).get("0")
	return out["breadcrumbs"]["values"][0], meta


_sdk_serialize = sentry_sdk.serializer.serialize


_EVENT_ARGUMENTS = frozenset(("max_request_body_size", "max_value_length", "custom_repr"))
_VARS_ARGUMENTS = frozenset(("is_vars", "custom_repr"))


def _serialize(event: dict[str, typing.Any], **kwargs: typing.Any) -> dict[str, typing.Any]:
	if kwargs.get("is_vars"):
		if kwargs.get("custom_repr") is None and _VARS_ARGUMENTS.issuperset(kwargs):
			out = fast_serialize.serialize_vars(event)
			if out is not None:
				return out
	elif _EVENT_ARGUMENTS.issuperset(kwargs):
		out = fast_serialize.serialize_event(
			event,
			max_value_length=kwargs.get("max_value_length"),
			max_request_body_size=kwargs.get("max_request_body_size"),
		)
		if out is not None:
			return out
	return _sdk_serialize(event, **kwargs)


def use_fast_serializer(enabled: bool) -> None:
	"""
	Let the client's event serialization (``serialize`` as the client module calls it in ``_prepare_event``)
	and the serialization of frame local variables (``serialize`` as ``sentry_sdk.serializer`` has it, which
	``serialize_frame`` imports when it runs) try `asab_sentry.serialize` first, or give both back sentry-sdk's.
	"""
	for module in (sentry_sdk.client, sentry_sdk.serializer):
		current = getattr(module, "serialize", None)
		if enabled and current is _sdk_serialize:
			module.serialize = _serialize  # type: ignore[attr-defined]
		elif not enabled and current is _serialize:
			module.serialize = _sdk_serialize  # type: ignore[attr-defined]


_sdk_get_lines_from_file = sentry_sdk.utils.get_lines_from_file
_SOURCE_CACHE_SIZE = 1024
_source_cache: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_source_lock = threading.Lock()

#: Seconds during which a file's modification time and size, once read, are taken as current. ``os.stat``
#: lets other threads take the interpreter lock, and getting it back cost ~100 µs per call in an error storm
#: with the delivery's threads busy (three calls per event of three frames).
SOURCE_RECHECK_INTERVAL = 1.0
_file_state: dict[str, tuple[float, tuple[int, int]]] = {}


def _file_signature(filename: str) -> tuple[int, int]:
	"""(modification time in ns, size) of the file, read at most once per `SOURCE_RECHECK_INTERVAL`."""
	now = time.monotonic()
	known = _file_state.get(filename)
	if known is not None and now - known[0] < SOURCE_RECHECK_INTERVAL:
		return known[1]
	stat = os.stat(filename)
	signature = (stat.st_mtime_ns, stat.st_size)
	if len(_file_state) >= _SOURCE_CACHE_SIZE:
		_file_state.clear()
	_file_state[filename] = (now, signature)
	return signature


def _cached_get_lines_from_file(
	filename: str,
	lineno: int,
	max_length: int | None = None,
	loader: typing.Any = None,
	module: str | None = None,
) -> tuple[list, typing.Any, list]:
	"""
	sentry-sdk's source context of one line, remembered per file, line and module while the file's modification
	time and size stay the same (looked at once per `SOURCE_RECHECK_INTERVAL`): sentry-sdk reads and decodes
	the whole module for every frame of every event.
	"""
	try:
		signature = _file_signature(filename)
	except (OSError, ValueError, TypeError):
		return _sdk_get_lines_from_file(filename, lineno, max_length, loader=loader, module=module)
	options = sentry_sdk.get_client().options
	key = (filename, lineno, max_length, module, id(loader), id(options))
	with _source_lock:
		cached = _source_cache.get(key)
		if cached is not None and cached[0] == signature and cached[1] is options:
			_source_cache.move_to_end(key)
			pre, line, post = cached[2]
			return list(pre), line, list(post)
	result = _sdk_get_lines_from_file(filename, lineno, max_length, loader=loader, module=module)
	pre, line, post = result
	with _source_lock:
		_source_cache[key] = (signature, options, (tuple(pre), line, tuple(post)))
		if len(_source_cache) > _SOURCE_CACHE_SIZE:
			_source_cache.popitem(last=False)
	return list(pre), line, list(post)


def use_source_cache(enabled: bool) -> None:
	"""Let sentry-sdk's source context (``get_source_context``) read lines through `_cached_get_lines_from_file`."""
	current = getattr(sentry_sdk.utils, "get_lines_from_file", None)
	if enabled and current is _sdk_get_lines_from_file:
		sentry_sdk.utils.get_lines_from_file = _cached_get_lines_from_file  # type: ignore[attr-defined]
	elif not enabled and current is _cached_get_lines_from_file:
		sentry_sdk.utils.get_lines_from_file = _sdk_get_lines_from_file  # type: ignore[attr-defined]
		with _source_lock:
			_source_cache.clear()
		_file_state.clear()


_sdk_apply_breadcrumbs = sentry_sdk.scope.Scope._apply_breadcrumbs_to_event
_ordered_type: type | None = None
_TIMESTAMP = itertools.repeat("timestamp")


def _timestamp(crumb: dict) -> typing.Any:
	return dict.get(crumb, "timestamp")


def _apply_breadcrumbs_to_event(
	self: typing.Any, event: dict[str, typing.Any], hint: typing.Any, options: typing.Any
) -> None:
	"""
	``Scope._apply_breadcrumbs_to_event`` when every pending breadcrumb is of the `use_breadcrumb_order` type and
	the event has none yet: the same list, ordered as sentry-sdk orders it (a stable sort by ``timestamp``),
	reading the timestamps at C speed instead of through the type's ``__getitem__`` twice per breadcrumb.
	"""
	crumbs = self._breadcrumbs
	kind = _ordered_type
	if kind is None or not crumbs or "breadcrumbs" in event or set(map(type, crumbs)) != {kind}:
		return _sdk_apply_breadcrumbs(self, event, hint, options)
	values = list(crumbs)
	for crumb in values:
		crumb.build()
	keys = list(map(dict.get, values, _TIMESTAMP))
	if set(map(type, keys)) != {datetime.datetime}:
		return _sdk_apply_breadcrumbs(self, event, hint, options)  # sentry-sdk parses text timestamps first
	try:
		ordered = all(map(operator.le, keys, itertools.islice(keys, 1, None)))
		if not ordered:
			values.sort(key=_timestamp)
	except TypeError:  # naive and aware datetimes: sentry-sdk's sort fails and leaves the list as it is
		return _sdk_apply_breadcrumbs(self, event, hint, options)
	event["breadcrumbs"] = {"values": values}


def use_breadcrumb_order(kind: type | None) -> None:
	"""
	Let sentry-sdk's scopes put breadcrumbs of type ``kind`` (a dict subclass with a ``build()`` method that
	completes it, `asab_sentry.breadcrumbs.LogBreadcrumb`) into events through `_apply_breadcrumbs_to_event`;
	None gives back sentry-sdk's own.
	"""
	global _ordered_type
	_ordered_type = kind
	if kind is not None:
		sentry_sdk.scope.Scope._apply_breadcrumbs_to_event = _apply_breadcrumbs_to_event  # type: ignore[method-assign]
	else:
		sentry_sdk.scope.Scope._apply_breadcrumbs_to_event = _sdk_apply_breadcrumbs  # type: ignore[method-assign]


_warm_up: list[threading.Thread] = []
#: Seconds the warm-up thread sleeps before each distribution it reads (about 160 in a typical virtualenv).
WARM_UP_PAUSE = 0.0005


def warm_up() -> threading.Thread | None:
	"""
	Do in a background thread the one-off work sentry-sdk leaves to the first event: the list of installed
	distributions that ModulesIntegration puts into every event (``_get_installed_modules``: the metadata of every
	distribution read and parsed, 20–80 ms). Left to the first event, it lands on the event loop, in the middle
	of whatever made that error (an error storm). The thread sleeps `WARM_UP_PAUSE` before each distribution
	(about half a millisecond of work each): it never holds the interpreter lock for long while the service
	starts or the loop runs (a thread that keeps it makes the others wait up to ``sys.getswitchinterval()``,
	5 ms, each time). The result is what sentry-sdk would compute; an event captured before the thread is done
	computes it itself, as before. Returns the thread, or None when there is nothing to do (or no thread
	can be started: never raises).
	"""
	if getattr(sentry_sdk.utils, "_installed_modules", None) is not None:
		return None
	thread = threading.Thread(target=_warm_installed_modules, name="asab-sentry-warm-up", daemon=True)
	try:
		thread.start()
	except RuntimeError:  # no thread to be had (a limit of threads or processes): the first event computes it
		return None
	_warm_up[:] = [thread]
	return thread


def _warm_installed_modules() -> None:
	try:
		modules = {}
		time.sleep(WARM_UP_PAUSE)  # `Thread.start()` returns to the service's start-up at once
		for name, version in sentry_sdk.utils._generate_installed_modules():  # type: ignore[attr-defined]
			modules[name] = version
			time.sleep(WARM_UP_PAUSE)  # the other threads (the event loop's) get the interpreter lock
		if sentry_sdk.utils._installed_modules is None:  # type: ignore[attr-defined]
			sentry_sdk.utils._installed_modules = modules  # type: ignore[attr-defined]
	except Exception:
		pass  # the first event computes it, as without the warm-up


def wait_warm_up(timeout: float) -> bool:
	"""Wait for the `warm_up` thread (tests, benchmarks); True when it is done (or none ran)."""
	for thread in list(_warm_up):
		thread.join(timeout)
		if thread.is_alive():
			return False
	return True
