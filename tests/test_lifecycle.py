"""Exit: pending events are flushed without blocking the event loop, bounded by shutdown_timeout."""

import asyncio
import logging
import socket
import threading
import time

import asab

import asab_sentry
from asab_sentry import _sdk
from helpers import App, configure, payloads

L = logging.getLogger("tests.lifecycle")


class Silent:
	"""A TCP server on 127.0.0.1 that accepts connections and never answers."""

	def __init__(self):
		self.Socket = socket.socket()
		self.Socket.bind(("127.0.0.1", 0))
		self.Socket.listen(16)
		self.Port = self.Socket.getsockname()[1]
		self.Connections = []
		self._stop = False
		self._thread = threading.Thread(target=self._accept, daemon=True)
		self._thread.start()

	def _accept(self):
		self.Socket.settimeout(0.1)
		while not self._stop:
			try:
				conn, _ = self.Socket.accept()
				self.Connections.append(conn)
			except OSError:
				pass

	def close(self):
		self._stop = True
		self._thread.join()
		for conn in self.Connections:
			conn.close()
		self.Socket.close()


class ObservedSentryService(asab_sentry.SentryService):
	"""Records when its finalize (the flush) starts and ends."""

	async def finalize(self, app):
		self.FlushStarted = time.monotonic()
		try:
			await super().finalize(app)
		finally:
			self.FlushEnded = time.monotonic()


class Ticker(asab.Service):
	"""Finalized at the same time as Sentry (asab 25.x): counts event loop iterations while Sentry flushes."""

	async def finalize(self, app):
		self.Iterations = 0
		while not hasattr(app.SentryService, "FlushStarted"):
			await asyncio.sleep(0)
		while not hasattr(app.SentryService, "FlushEnded"):
			self.Iterations += 1
			await asyncio.sleep(0)


def test_flush_on_exit_does_not_block_the_loop_and_is_bounded(caplog):
	silent = Silent()
	try:
		configure(
			{"sentry": {"data_source_name": "http://k@127.0.0.1:{}/1".format(silent.Port), "shutdown_timeout": "1s"}}
		)

		class Observed(asab.Application):
			def __init__(self):
				super().__init__(args=[])
				self.SentryService = ObservedSentryService(self)
				self.Ticker = Ticker(self, "ticker")

			async def main(self):
				L.error("never delivered")
				self.stop()

		app = Observed()
		app.run()
		# The flush gave up after shutdown_timeout (not after the HTTP timeout: it is bounded) and said so ...
		said = [r.getMessage() for r in caplog.records if r.name == "asab_sentry.delivery"]
		assert said == [
			"1 envelope(s) not delivered to Sentry at 127.0.0.1 within shutdown_timeout=1s: dropped (no [sentry] outbox)."
		]
		# ... and all the while the event loop kept running (a blocking flush allows it no iteration).
		assert app.Ticker.Iterations >= 100, "the event loop was blocked during the flush"
	finally:
		silent.close()


class Noisy(asab.Service):
	"""A service that logs an error when it is finalized."""

	async def finalize(self, app):
		L.error("error while finalizing %s", self.Name)


def test_error_logged_by_a_service_finalized_at_the_same_time(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	class WithNoisy(App):
		def __init__(self):
			super().__init__()
			Noisy(self, "noisy")

		async def main(self):
			self.stop()

	WithNoisy().run()
	(event,) = payloads(collector)
	assert event["logentry"]["formatted"] == "error while finalizing noisy"


def test_services_finalized_one_by_one_in_reverse_order(collector):
	"""Newer asab finalizes services sequentially, the last registered first."""
	configure({"sentry": {"data_source_name": collector.dsn}})
	order = []

	class Sequential(App):
		def __init__(self):
			super().__init__()
			Noisy(self, "noisy")

		async def main(self):
			L.error("just before stop")
			self.stop()

		async def _exit_time_governor(self):
			self.PubSub.publish("Application.exit!")
			for service in reversed(list(self.Services.values())):
				order.append(service.Name)
				await service.finalize(self)

	Sequential().run()
	assert order.index("noisy") < order.index("asab.SentryService")
	texts = sorted(e["logentry"]["formatted"] for e in payloads(collector, count=2))
	assert texts == ["error while finalizing noisy", "just before stop"]


def test_finalize_without_active_client_is_quiet(sentry_capture):
	app = sentry_capture.application()
	svc = app.get_service("asab.SentryService")

	_sdk.reset()
	app.Loop.run_until_complete(svc.finalize(app))


def test_second_service_replaces_the_log_handler(sentry_capture):
	app = sentry_capture.application()
	asab_sentry.SentryService(app, "second")
	handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "SentryLogHandler"]
	assert len(handlers) == 1
