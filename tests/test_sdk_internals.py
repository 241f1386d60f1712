"""Pins the sentry-sdk internals this package relies on (all used in asab_sentry/_sdk.py only)."""

import logging

import pytest
import sentry_sdk
import sentry_sdk.scope
import sentry_sdk.transport
import sentry_sdk.utils

from asab_sentry import _sdk


def test_scope_globals_exist():
	assert hasattr(sentry_sdk.scope, "_global_scope")
	assert isinstance(sentry_sdk.scope._isolation_scope.get(None), (sentry_sdk.Scope, type(None)))
	assert isinstance(sentry_sdk.scope._current_scope.get(None), (sentry_sdk.Scope, type(None)))


def test_reset_forgets_client_and_scopes():
	sentry_sdk.init(dsn=None, transport=None, default_integrations=False)
	sentry_sdk.get_global_scope().set_tag("leak", "yes")
	sentry_sdk.get_isolation_scope().set_tag("leak2", "yes")
	_sdk.reset()
	assert not sentry_sdk.get_client().is_active()
	assert sentry_sdk.get_global_scope()._tags == {}
	assert sentry_sdk.get_isolation_scope()._tags == {}


@pytest.mark.allow_internal_errors
def test_internal_errors_are_logged_on_the_errors_logger_and_recorded():
	assert sentry_sdk.utils.logger.name == "sentry_sdk.errors"
	recorder = _sdk.InternalErrorRecorder()
	recorder.install()
	try:
		sentry_sdk.init(dsn=None, default_integrations=False)
		try:
			raise RuntimeError("sdk bug")
		except RuntimeError:
			import sys

			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
	finally:
		recorder.uninstall()
		_sdk.reset()
	assert [r.getMessage() for r in recorder.Records] == ["Internal error in sentry_sdk"]
	assert all(r.levelno >= logging.ERROR for r in recorder.Records)


class _NullTransport(sentry_sdk.transport.Transport):
	def capture_envelope(self, envelope):
		pass


def test_internal_logger_is_the_one_sentry_sdk_debugs_on_and_can_be_quieted():
	"""sentry-sdk's internal debug messages go through sentry_sdk.utils.logger; quiet, no record is made."""
	seen = []

	class Seen(logging.Filter):
		def filter(self, record):
			seen.append(record.levelno)
			return True

	probe = Seen()
	sentry_sdk.utils.logger.filters.insert(0, probe)  # before sentry-sdk's own filter, which drops them
	try:
		sentry_sdk.init(transport=_NullTransport(), default_integrations=False, traces_sample_rate=0)
		assert sentry_sdk.utils.logger.level == logging.DEBUG  # sentry-sdk's own setting
		with sentry_sdk.start_transaction(op="task", name="unsampled"):
			pass
		assert logging.DEBUG in seen
		seen.clear()
		_sdk.quiet_internal_logger(True)
		with sentry_sdk.start_transaction(op="task", name="unsampled"):
			pass
		assert seen == []
	finally:
		sentry_sdk.utils.logger.removeFilter(probe)
		_sdk.reset()
	assert sentry_sdk.utils.logger.level == logging.DEBUG


def _events_with_breadcrumbs(add) -> list[dict]:
	events = []

	class Keep(sentry_sdk.transport.Transport):
		def capture_envelope(self, envelope):
			events.extend(item.payload.json for item in envelope.items if item.type == "event")

	sentry_sdk.init(transport=Keep(), default_integrations=False, max_breadcrumbs=3)
	try:
		for n in range(5):
			add({"type": "log", "category": "c", "message": "m{}".format(n), "timestamp": 1700000000 + n})
		sentry_sdk.capture_message("with breadcrumbs")
	finally:
		_sdk.reset()
	return events


def test_append_breadcrumb_is_what_add_breadcrumb_does_without_a_callback():
	(ours,) = _events_with_breadcrumbs(lambda crumb: _sdk.append_breadcrumb(crumb, 3))
	(sdk,) = _events_with_breadcrumbs(sentry_sdk.add_breadcrumb)
	assert ours["breadcrumbs"] == sdk["breadcrumbs"]
	assert [c["message"] for c in ours["breadcrumbs"]["values"]] == ["m2", "m3", "m4"]
	assert ours["_meta"]["breadcrumbs"] == sdk["_meta"]["breadcrumbs"] == {"": {"len": 5}}


def test_serialize_breadcrumb_is_the_breadcrumb_as_serialized_in_an_event():
	import datetime

	import sentry_sdk.serializer

	crumb = {
		"type": "log",
		"message": "x" * 50,
		"timestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
		"data": {"k{}".format(i): object() for i in range(12)},
	}
	options = {"max_value_length": 20}
	event = sentry_sdk.serializer.serialize({"breadcrumbs": {"values": [{}, crumb]}}, max_value_length=20)
	value, meta = _sdk.serialize_breadcrumb(crumb, options)
	assert value == event["breadcrumbs"]["values"][1]
	assert meta == event["_meta"]["breadcrumbs"]["values"]["1"]
	assert meta["message"] and meta["data"]


def test_span_recorder_keeps_finished_children_for_the_web_transactions():
	"""asab_sentry.web sends request transactions itself and reads their child spans from the recorder."""
	from sentry_sdk.tracing import Transaction

	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False, traces_sample_rate=1.0)
	try:
		transaction = Transaction(op="http.server", name="GET /", sampled=True)
		transaction.init_span_recorder(maxlen=10)
		done = transaction.start_child(op="db", name="q")
		done.finish()
		transaction.start_child(op="db", name="open")  # not finished: left out
		spans = _sdk.finished_child_spans(transaction)
		assert spans == [done]
		assert spans[0].to_json()["op"] == "db"
		transaction.set_http_status(404)
		tags, data = _sdk.span_tags_and_data(transaction)
		assert data["http.response.status_code"] == 404 and tags["http.status_code"] == "404"
	finally:
		_sdk.reset()


def test_scope_data_merges_global_isolation_and_current():
	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False)
	try:
		sentry_sdk.get_global_scope().set_tag("a", "global")
		sentry_sdk.get_global_scope().set_tag("b", "global")
		with sentry_sdk.isolation_scope():
			sentry_sdk.get_isolation_scope().set_tag("b", "isolation")
			sentry_sdk.get_isolation_scope().set_user({"id": "7"})
			sentry_sdk.get_current_scope().set_context("c", {"x": 1})
			tags, user, contexts = _sdk.scope_data()
		assert tags == {"a": "global", "b": "isolation"} and user == {"id": "7"} and contexts == {"c": {"x": 1}}
	finally:
		_sdk.reset()


def test_own_isolation_scope_forks_only_the_isolation_scope():
	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False)
	try:
		outer, current = sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()
		with _sdk.own_isolation_scope():
			assert sentry_sdk.get_isolation_scope() is not outer
			assert sentry_sdk.get_current_scope() is current
			sentry_sdk.get_isolation_scope().set_tag("request", "1")
		assert sentry_sdk.get_isolation_scope() is outer and "request" not in outer._tags
	finally:
		_sdk.reset()


def test_fork_scopes_is_what_isolation_scope_does():
	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False)
	try:
		outer, current = sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()
		current.set_tag("before", "1")
		tokens = _sdk.fork_scopes()
		assert sentry_sdk.get_current_scope() is tokens[2] is not current
		assert sentry_sdk.get_isolation_scope() is not outer
		assert tokens[2]._tags == {"before": "1"}
		sentry_sdk.get_isolation_scope().set_tag("request", "1")
		sentry_sdk.get_current_scope().set_tag("span", "1")
		_sdk.restore_scopes(tokens)
		assert sentry_sdk.get_isolation_scope() is outer and "request" not in outer._tags
		assert sentry_sdk.get_current_scope() is current and "span" not in current._tags
	finally:
		_sdk.reset()


def test_copy_scope_is_scope_copy_made_faster():
	"""`_sdk.copy_scope`, learnt from the installed sentry-sdk's ``Scope.__copy__``, makes the same copy: the same
	values, the same attributes shared and copied (CI runs this on the oldest supported sentry-sdk and the newest)."""
	assert _sdk.copy_scope is not sentry_sdk.Scope.__copy__, "the installed sentry-sdk's Scope.__copy__ was not learnt"
	sentry_sdk.init()
	scope = sentry_sdk.Scope()
	scope.set_tag("t", "v")
	scope.set_context("c", {"k": 1})
	scope.set_extra("e", [1, 2])
	scope.set_user({"id": "u"})
	scope.set_level("warning")
	scope.fingerprint = ["f"]
	scope.add_breadcrumb({"message": "m"})
	scope.add_event_processor(lambda event, hint: event)
	scope.add_error_processor(lambda event, hint: event)
	scope.add_attachment(bytes=b"x", filename="x.txt")
	slots = [name for klass in type(scope).__mro__ for name in getattr(klass, "__slots__", ())]
	mine, theirs = _sdk.copy_scope(scope), scope.__copy__()
	assert type(mine) is type(theirs)
	for name in slots:
		original, a, b = getattr(scope, name), getattr(mine, name), getattr(theirs, name)
		assert type(a) is type(b), name
		assert (a is original) == (b is original), name
		if isinstance(a, (dict, list)) or type(a).__name__ == "deque":
			assert (a == b) if isinstance(a, dict) else (list(a) == list(b)), name
	mine.set_tag("only", "mine")
	mine.add_breadcrumb({"message": "mine"})
	assert "only" not in scope._tags and len(scope._breadcrumbs) == 1


def test_copy_scope_of_a_scope_subclass_is_its_own_copy():
	"""A subclass of `sentry_sdk.Scope` (its own slots, its own ``__copy__``) as the isolation scope: forked as
	``Scope.fork()`` forks it, by its ``__copy__``, not by the copy learnt from ``Scope.__copy__``."""

	class _TeamScope(sentry_sdk.Scope):
		__slots__ = ("Team",)

		def __init__(self, *args, **kwargs):
			super().__init__(*args, **kwargs)
			self.Team = {"name": "a"}

		def __copy__(self):
			copied = super().__copy__()
			copied.Team = dict(self.Team)
			return copied

	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False)
	try:
		outer = _TeamScope()
		outer.set_tag("t", "v")
		token = sentry_sdk.scope._isolation_scope.set(outer)
		try:
			fork_token = _sdk.fork_isolation_scope()
			forked = sentry_sdk.get_isolation_scope()
			assert type(forked) is _TeamScope and forked is not outer
			assert forked.Team == {"name": "a"} and forked.Team is not outer.Team
			assert forked._tags == {"t": "v"}
			_sdk.restore_isolation_scope(fork_token)
		finally:
			sentry_sdk.scope._isolation_scope.reset(token)
	finally:
		_sdk.reset()


def test_copy_scope_keeps_feature_flags_and_attachments_apart():
	"""Feature flags (`sentry_sdk.feature_flags.add_feature_flag`) and attachments recorded in a fork stay in it,
	and those of the scope forked are in the fork, as with ``Scope.fork()``."""
	from sentry_sdk.feature_flags import add_feature_flag

	sentry_sdk.init(dsn=None, transport=_NullTransport(), default_integrations=False)
	try:
		with sentry_sdk.isolation_scope():
			add_feature_flag("before", True)
			sentry_sdk.get_isolation_scope().add_attachment(bytes=b"x", filename="x.txt")
			holder = next(s for s in (sentry_sdk.get_current_scope(), sentry_sdk.get_isolation_scope()) if s._flags)
			forked = _sdk.copy_scope(holder)
			assert forked._flags is not holder._flags
			assert forked._flags.get() == [{"flag": "before", "result": True}]
			forked._flags.set("in_fork", False)
			holder._flags.set("in_parent", True)
			assert [f["flag"] for f in holder._flags.get()] == ["before", "in_parent"]
			assert [f["flag"] for f in forked._flags.get()] == ["before", "in_fork"]
			iso = sentry_sdk.get_isolation_scope()
			iso_fork = _sdk.copy_scope(iso)
			iso_fork.add_attachment(bytes=b"y", filename="y.txt")
			assert [a.filename for a in iso._attachments] == ["x.txt"]
			assert [a.filename for a in iso_fork._attachments] == ["x.txt", "y.txt"]
	finally:
		_sdk.reset()


def test_the_client_serializes_events_through_its_module_name_serialize():
	import sentry_sdk.client
	import sentry_sdk.serializer

	assert sentry_sdk.client.serialize is sentry_sdk.serializer.serialize
	calls = []
	original = sentry_sdk.client.serialize

	def spy(event, **kwargs):
		calls.append(sorted(kwargs))
		return original(event, **kwargs)

	sentry_sdk.client.serialize = spy
	try:
		sentry_sdk.init(transport=_NullTransport(), default_integrations=False)
		sentry_sdk.capture_message("through serialize")
	finally:
		sentry_sdk.client.serialize = original
		_sdk.reset()
	assert calls == [["custom_repr", "max_request_body_size", "max_value_length"]]


def test_use_fast_serializer_switches_and_reset_restores():
	import sentry_sdk.client
	import sentry_sdk.serializer

	original = sentry_sdk.serializer.serialize
	_sdk.use_fast_serializer(True)
	assert sentry_sdk.client.serialize is _sdk._serialize
	assert sentry_sdk.serializer.serialize is _sdk._serialize
	_sdk.reset()
	assert sentry_sdk.client.serialize is sentry_sdk.serializer.serialize is original


def test_frame_local_variables_are_serialized_through_the_serializer_module_attribute():
	"""``serialize_frame`` imports ``serialize`` from ``sentry_sdk.serializer`` when it runs, with is_vars."""
	import sentry_sdk.serializer

	calls = []
	original = sentry_sdk.serializer.serialize

	def spy(value, **kwargs):
		calls.append(sorted(kwargs))
		return original(value, **kwargs)

	sentry_sdk.serializer.serialize = spy
	try:
		sentry_sdk.init(transport=_NullTransport(), default_integrations=False)
		try:
			local = [1, "two"]  # noqa: F841
			raise ValueError("x")
		except ValueError as e:
			sentry_sdk.capture_exception(e)
	finally:
		sentry_sdk.serializer.serialize = original
		_sdk.reset()
	assert ["custom_repr", "is_vars"] in calls


def test_source_context_reads_lines_through_the_module_name_get_lines_from_file():
	import inspect

	seen = []
	original = sentry_sdk.utils.get_lines_from_file
	assert list(inspect.signature(original).parameters) == ["filename", "lineno", "max_length", "loader", "module"]

	def spy(filename, lineno, max_length=None, loader=None, module=None):
		seen.append((filename, lineno))
		return original(filename, lineno, max_length, loader=loader, module=module)

	sentry_sdk.utils.get_lines_from_file = spy
	try:
		frame = inspect.currentframe()
		lineno = frame.f_lineno
		pre, line, post = sentry_sdk.utils.get_source_context(frame, lineno)
	finally:
		sentry_sdk.utils.get_lines_from_file = original
	assert seen == [(__file__, lineno - 1)]
	assert "lineno = frame.f_lineno" in line


def test_source_cache_follows_the_file(tmp_path):
	path = tmp_path / "module_under_test.py"
	import importlib.machinery

	path.write_text("a = 1\nb = 2\nc = 3\n")
	# Frames of imported modules carry their loader, which sentry-sdk asks for the source (fresh every time).
	loader = importlib.machinery.SourceFileLoader("module_under_test", str(path))
	_sdk.use_source_cache(True)
	try:
		lines = sentry_sdk.utils.get_lines_from_file
		first = lines(str(path), 1, loader=loader, module="module_under_test")
		assert first == (["a = 1"], "b = 2", ["c = 3"])
		assert lines(str(path), 1, loader=loader, module="module_under_test") == first
		path.write_text("a = 1\nchanged = 22\nc = 3\n")
		# The file is looked at again once SOURCE_RECHECK_INTERVAL has passed, not at every frame.
		assert lines(str(path), 1, loader=loader, module="module_under_test") == first
		_sdk.SOURCE_RECHECK_INTERVAL = 0.0
		assert lines(str(path), 1, loader=loader, module="module_under_test")[1] == "changed = 22"
	finally:
		_sdk.SOURCE_RECHECK_INTERVAL = 1.0
		_sdk.reset()
	assert sentry_sdk.utils.get_lines_from_file is _sdk._sdk_get_lines_from_file


def test_scopes_put_breadcrumbs_into_events_through_apply_breadcrumbs_to_event():
	"""``Scope.apply_to_event`` calls ``self._apply_breadcrumbs_to_event(event, hint, options)``, which
	`_sdk.use_breadcrumb_order` replaces (and `_sdk.reset` gives back)."""
	import inspect

	from asab_sentry.breadcrumbs import LogBreadcrumb

	original = sentry_sdk.scope.Scope._apply_breadcrumbs_to_event
	assert list(inspect.signature(original).parameters) == ["self", "event", "hint", "options"]
	assert "self._apply_breadcrumbs_to_event(event, hint, options)" in inspect.getsource(
		sentry_sdk.scope.Scope.apply_to_event
	)
	_sdk.use_breadcrumb_order(LogBreadcrumb)
	try:
		assert sentry_sdk.scope.Scope._apply_breadcrumbs_to_event is _sdk._apply_breadcrumbs_to_event
		scope = sentry_sdk.Scope()
		record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
		scope._breadcrumbs.append(LogBreadcrumb(record, "m", lambda r, m: {"timestamp": 1, "message": m}))
		event: dict = {}
		scope._apply_breadcrumbs_to_event(event, {}, {})
		assert event == {"breadcrumbs": {"values": [{"timestamp": 1, "message": "m"}]}}  # not datetimes: sentry-sdk's
	finally:
		_sdk.reset()
	assert sentry_sdk.scope.Scope._apply_breadcrumbs_to_event is original


def test_the_modules_integration_reads_the_installed_modules_cached_in_one_module_global(monkeypatch):
	"""`_sdk.warm_up` fills sentry-sdk's cache of the installed distributions (what every event's ``modules`` is)."""
	from sentry_sdk.integrations.modules import ModulesIntegration

	monkeypatch.setattr(sentry_sdk.utils, "_installed_modules", None)
	computed = dict(sentry_sdk.utils._generate_installed_modules())
	assert computed and all(type(k) is str and type(v) is str for k, v in computed.items())
	ready = {"asab-sentry-pinned": "1.0"}
	sentry_sdk.utils._installed_modules = ready
	assert sentry_sdk.utils._get_installed_modules() is ready
	events = []
	sentry_sdk.init(dsn=None, default_integrations=False, integrations=[ModulesIntegration()])
	sentry_sdk.get_global_scope().add_event_processor(lambda event, hint: events.append(event) or event)
	sentry_sdk.capture_message("modules")
	assert events[0]["modules"] is ready
