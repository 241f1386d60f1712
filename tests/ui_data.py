"""What the web UI tests look at: a collector fed by real SDK clients with errors (grouped), a message with
HTML in it, a transaction with nested spans, log records, a cron check-in and a binary attachment."""

from __future__ import annotations

import logging
import time

import sentry_sdk
import sentry_sdk.logger
from sentry_sdk.crons import monitor

from asab_sentry import _sdk
from helpers import configure, run_app

L = logging.getLogger("shop.orders")

# Log records: an option of sentry-sdk 2.28+, an experiment before (then sent as otel_log items).
LOGS_ON = (
	{"enable_logs": True}
	if "enable_logs" in sentry_sdk.consts.DEFAULT_OPTIONS
	else {"_experiments": {"enable_logs": True}}
)

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ATTACHMENT = b"\x00\x01binary\xff\xfe<html>"


def load_order(order_id):
	customer_note = HOSTILE  # noqa: F841 - a local variable the event page shows (escaped)
	raise KeyError("order {} missing".format(order_id))


def populate(dsn: str, errors: int = 3) -> None:
	"""Send everything through a real SentryService (errors, message, transaction) and sentry-sdk (logs,
	check-in, attachment); return when it is stored."""
	configure(
		{
			"sentry": {
				"data_source_name": dsn,
				"traces_sample_rate": "1",
				"release": "shop@1.4.2",
				"environment": "dev",
			}
		}
	)

	async def body(app):
		L.warning("looking up order", struct_data={"order": 5, "note": HOSTILE})
		app.SentryService.set_tag("tenant", "acme")
		for _ in range(errors):
			try:
				load_order(5)
			except KeyError as e:
				app.SentryService.capture_exception(e)
		app.SentryService.capture_message("payment provider slow " + HOSTILE, level="warning")
		with app.SentryService.transaction("task", "import orders"):
			with app.SentryService.span("db", "SELECT * FROM orders"):
				time.sleep(0.02)
			with app.SentryService.span("http", "POST /results"):
				with app.SentryService.span("serialize", "json"):
					time.sleep(0.01)
				time.sleep(0.01)

	run_app(body)
	sentry_sdk.flush(10)
	_sdk.reset()

	sentry_sdk.init(dsn=dsn, release="shop@1.4.2", environment="dev", **LOGS_ON)
	try:
		sentry_sdk.logger.info("imported {count} orders", count=12)
		sentry_sdk.logger.error("checksum mismatch in batch {batch} " + HOSTILE, batch="b-17")

		@monitor(monitor_slug="nightly-import")
		def job():
			time.sleep(0.01)

		job()
		with sentry_sdk.new_scope() as scope:
			scope.add_attachment(bytes=ATTACHMENT, filename="dump.bin")
			sentry_sdk.capture_message("with attachment")
		sentry_sdk.flush(10)
	finally:
		_sdk.reset()


def send_error(dsn: str, message: str) -> None:
	"""One more error from a real SentryService (the live-update tests)."""
	configure({"sentry": {"data_source_name": dsn, "release": "shop@1.4.3", "environment": "dev"}})

	async def body(app):
		try:
			raise RuntimeError(message)
		except RuntimeError as e:
			app.SentryService.capture_exception(e)

	run_app(body)
	sentry_sdk.flush(10)
	_sdk.reset()


if __name__ == "__main__":  # python tests/ui_data.py DSN [MESSAGE]: what the browser tests send, as a client
	import sys

	if len(sys.argv) > 2:
		send_error(sys.argv[1], sys.argv[2])
	else:
		populate(sys.argv[1])
