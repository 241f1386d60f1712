"""
INFO breadcrumbs in an ASAB service run without -v (root logger at NOTICE), as the documentation promises,
while every other handler writes exactly what it wrote before (asab_sentry.levels).
"""

import io
import logging

import asab
import asab.log

import asab_sentry
from asab_sentry import levels

L = logging.getLogger("tests.levels")


def console_before_the_service():
	"""A handler as asab's console handler is: on the root logger, level DEBUG, relying on the root's level."""
	stream = io.StringIO()
	handler = logging.StreamHandler(stream)
	handler.setLevel(logging.DEBUG)
	logging.getLogger().addHandler(handler)
	return stream, handler


def test_info_breadcrumbs_without_verbose_and_the_console_unchanged(sentry_capture):
	stream, handler = console_before_the_service()
	inheriting = io.StringIO()
	own = logging.StreamHandler(inheriting)  # on a logger of the application, no level of its own
	logging.getLogger("tests").addHandler(own)
	try:
		app = sentry_capture.application()
		assert logging.getLogger().getEffectiveLevel() == logging.INFO
		L.info("user %s logged in", "alice")
		L.log(asab.LOG_NOTICE, "cache warmed")
		L.error("payment failed")
		event = sentry_capture.find(level="error")
		assert [c["message"] for c in event["breadcrumbs"]["values"]][-2:] == ["user alice logged in", "cache warmed"]
		# The console and the application's own handler write what they wrote before: NOTICE and above.
		for output in (stream.getvalue(), inheriting.getvalue()):
			assert "user alice logged in" not in output
			assert "cache warmed" in output and "payment failed" in output
		assert handler.level == asab.LOG_NOTICE and own.level == asab.LOG_NOTICE
		assert app is not None
	finally:
		logging.getLogger("tests").removeHandler(own)
		logging.getLogger().removeHandler(handler)


def test_restore_gives_back_only_what_is_still_as_set():
	root = logging.getLogger()
	saved = root.level
	stream = io.StringIO()
	handler = logging.StreamHandler(stream)
	other = logging.StreamHandler(io.StringIO())
	root.addHandler(handler)
	root.addHandler(other)
	try:
		root.setLevel(asab.LOG_NOTICE)
		assert levels.open_root(logging.INFO) is True
		assert root.level == logging.INFO and handler.level == asab.LOG_NOTICE
		other.setLevel(logging.ERROR)  # changed by the application since: left as it is
		levels.restore()
		assert root.level == asab.LOG_NOTICE and handler.level == logging.NOTSET and other.level == logging.ERROR
		# Nothing to open: the root already lets the level through, or no level is wanted.
		assert levels.open_root(asab.LOG_NOTICE) is False and levels.open_root(None) is False
		root.setLevel(logging.DEBUG)
		assert levels.open_root(logging.INFO) is False and root.level == logging.DEBUG
	finally:
		levels.restore()
		root.removeHandler(handler)
		root.removeHandler(other)
		root.setLevel(saved)


def test_a_logger_with_its_own_level_keeps_it(sentry_capture):
	sentry_capture.configure({"logging": {"levels": "tests.levels.quiet WARNING"}})
	sentry_capture.application()
	logging.getLogger("tests.levels.quiet").info("not wanted")
	L.info("wanted")
	L.error("failed")
	messages = [c["message"] for c in sentry_capture.find(level="error")["breadcrumbs"]["values"]]
	assert "wanted" in messages and "not wanted" not in messages


def test_breadcrumbs_at_notice_leave_the_root_alone(sentry_capture):
	sentry_capture.configure({"sentry:logging": {"breadcrumbs": "notice"}})
	sentry_capture.application()
	assert logging.getLogger().level == asab.LOG_NOTICE
	L.info("not a breadcrumb")
	L.error("failed")
	assert "not a breadcrumb" not in [c["message"] for c in sentry_capture.find(level="error")["breadcrumbs"]["values"]]


def test_the_testing_kit_gives_the_levels_back():
	from asab_sentry.testing import capture_sentry

	root = logging.getLogger()
	stream, handler = console_before_the_service()
	saved = root.level
	try:
		root.setLevel(asab.LOG_NOTICE)
		with capture_sentry() as capture:
			capture.application()
			assert root.level == logging.INFO and handler.level == asab.LOG_NOTICE
		assert root.level == asab.LOG_NOTICE and handler.level == logging.DEBUG
		# Handlers added once the service is gone are left as they are.
		late = logging.StreamHandler(io.StringIO())
		root.addHandler(late)
		root.removeHandler(late)
		assert late.level == logging.NOTSET
	finally:
		root.removeHandler(handler)
		root.setLevel(saved)


def test_a_handler_added_after_the_service_writes_what_it_wrote_before(sentry_capture):
	# asab.api.ApiService(app).initialize_web() adds its log handler (the last 10 records, /asab/v1/logs and its
	# websocket) to the root logger without a level, often after the SentryService: INFO records pushed the
	# warnings out of its buffer.
	sentry_capture.configure({"web": {"listen": "127.0.0.1 0"}})
	import asab.api
	import asab.web

	class App(asab.Application):
		def __init__(self, args=None):
			super().__init__(args=args)
			self.add_module(asab.web.Module)
			self.SentryService = asab_sentry.SentryService(self)
			self.Api = asab.api.ApiService(self)
			self.Api.initialize_web()

	app = sentry_capture.application(App)
	late = io.StringIO()
	own = logging.StreamHandler(late)  # an application's handler on one of its loggers, added later
	logging.getLogger("tests").addHandler(own)
	try:
		for i in range(10):
			L.info("routine %d", i)
		L.warning("disk almost full")
		assert [entry["M"] for entry in app.Api.APILogHandler.Buffer] == ["disk almost full"]
		assert late.getvalue() == "disk almost full\n"
		L.error("payment failed")  # the breadcrumbs are still there
		event = sentry_capture.find(level="error")
		assert "routine 9" in [c["message"] for c in event["breadcrumbs"]["values"]]
	finally:
		logging.getLogger("tests").removeHandler(own)
	# A handler with a level of its own keeps it (pytest's caplog with log_level set, for one).
	explicit = logging.StreamHandler(io.StringIO())
	explicit.setLevel(logging.DEBUG)
	logging.getLogger().addHandler(explicit)
	try:
		assert explicit.level == logging.DEBUG
	finally:
		logging.getLogger().removeHandler(explicit)
