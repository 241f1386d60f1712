#!/usr/bin/env python3
"""
The example application of the documentation page ("Sentry Integration"), with a ``main()`` that uses
every feature the page describes.

Run it against any Sentry (or the local collector)::

	SENTRY_DSN=http://asabsentry@127.0.0.1:8999/1 .venv/bin/python examples/my_app.py -c examples/my_app.conf

``asab-sentry demo`` runs exactly this against a collector it starts itself.
"""

import asyncio
import logging
import threading
import time

import asab

L = logging.getLogger(__name__)


class MyApplication(asab.Application):
	def __init__(self):
		super().__init__()
		if "sentry" in asab.Config.sections():
			import asab_sentry

			self.SentryService = asab_sentry.SentryService(self)
		else:
			self.SentryService = None

	async def main(self):
		sentry_service = self.SentryService
		if sentry_service is None:
			L.warning("No [sentry] section in the configuration: nothing is reported.")
			self.stop()
			return

		# Breadcrumbs: log records at or above [sentry:logging] breadcrumbs (NOTICE by default in asab).
		L.log(asab.LOG_NOTICE, "Demo is starting", struct_data={"step": "start"})
		L.warning("Cache is cold, the first requests will be slow", struct_data={"cache": "users"})

		# Tags: valid ones are set, an invalid one is rejected with one error log line (not an event).
		sentry_service.set_tag("method", "main")
		sentry_service.set_tags({"foo": "bar", "fooz": "buzz", "invalid key!": "rejected"})
		sentry_service.set_context("demo", {"purpose": "show every feature", "version": 1})

		# A caught exception, sent on purpose.
		try:
			call_collapsing_function()
		except Exception as e:
			sentry_service.capture_exception(e)

		# A message.
		required_variable = None
		if required_variable is None:
			sentry_service.capture_message("required_variable was not set")

		# An error log with ASAB structured data becomes an event.
		L.error("Cannot connect to the database", struct_data={"host": "db.example", "attempt": 3})

		# Performance monitoring: a transaction with two child spans.
		with sentry_service.transaction("speed test", "multiple tasks"):
			prepare_task()
			with sentry_service.span("task", "task1"):
				await asyncio.sleep(0.05)
			with sentry_service.span("task", "task2"):
				time.sleep(0.02)

		# Uncaught exceptions: in a task nobody awaits, and in a thread.
		asyncio.ensure_future(background_job())
		thread = threading.Thread(target=thread_job, name="worker")
		thread.start()
		thread.join()
		await asyncio.sleep(0.2)

		L.error("Last error before stopping")
		self.stop()


def call_collapsing_function():
	divisor = 0
	return 1 / divisor


def prepare_task():
	time.sleep(0.01)


async def background_job():
	records = {"id": 7}
	raise KeyError("missing field 'name' in record {}".format(records["id"]))


def thread_job():
	raise RuntimeError("worker thread crashed")


if __name__ == "__main__":
	app = MyApplication()
	app.run()
