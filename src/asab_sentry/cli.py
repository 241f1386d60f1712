"""
The ``asab-sentry`` command::

	asab-sentry demo                     # see it work, no Sentry account needed
	asab-sentry collector [options]      # a local Sentry-compatible endpoint
	asab-sentry events list|show|tail    # what the collector stored
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing

from .errors import SentryConfigError

DEFAULT_STORAGE = "asab-sentry.sqlite"


def _parser() -> argparse.ArgumentParser:
	parser = argparse.ArgumentParser(prog="asab-sentry", description="Sentry for ASAB microservices: local tools.")
	commands = parser.add_subparsers(dest="command", required=True)

	demo = commands.add_parser("demo", help="run the example application against an in-process collector")
	demo.add_argument("--storage", default="asab-sentry-demo.sqlite", help="SQLite file (default: %(default)s)")
	demo.add_argument("--show-output", action="store_true", help="print the example application's console output")

	collector = commands.add_parser("collector", help="run a local Sentry-compatible ingest endpoint")
	collector.add_argument("-c", "--config", help="ASAB configuration file with a [collector] section")
	collector.add_argument("--host", help="listen address (default 127.0.0.1)")
	collector.add_argument("--port", type=int, help="port (default 8999)")
	collector.add_argument("--storage", help="SQLite file (default {})".format(DEFAULT_STORAGE))
	collector.add_argument("--project-id", help="project id of the DSN (default 1)")
	collector.add_argument("--key", help="public key of the DSN (default asabsentry)")
	collector.add_argument("--max-envelope-size", type=int, help="bytes; larger bodies get 413")
	collector.add_argument("--max-decompressed-size", type=int, help="bytes after decompression; larger get 413")
	collector.add_argument("--rate-limit", type=int, help="envelopes per --rate-window; over it: 429")
	collector.add_argument("--rate-window", help="e.g. 60s")
	collector.add_argument("--retention-age", help="e.g. 7d; 0 keeps forever")
	collector.add_argument("--retention-count", type=int, help="keep at most this many items; 0: no limit")

	events = commands.add_parser("events", help="show what the collector stored")
	events.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLite file (default: %(default)s)")
	events.add_argument("--url", help="read from a running collector instead, e.g. http://127.0.0.1:8999")
	events.add_argument("--json", action="store_true", help="JSON output for scripts")
	views = events.add_subparsers(dest="view", required=True)
	listing = views.add_parser("list", help="one line per item, newest last")
	for view in (listing, views.add_parser("tail", help="follow new items live")):
		view.add_argument("--type", help="event, transaction, session, client_report, ...")
		view.add_argument("--level", help="fatal, error, warning, info, debug")
		view.add_argument("--tag", help="key:value")
		view.add_argument("--q", dest="text", help="text in the title or exception type")
		view.add_argument("--release")
		view.add_argument("--environment")
	listing.add_argument("--since", help="a span back from now (15m, 2h, 1d), an ISO date/time (local) or unix time")
	listing.add_argument("--until", help="like --since")
	listing.add_argument("--limit", type=int, default=50)
	listing.add_argument("--offset", type=int, default=0)
	show = views.add_parser("show", help="one item in full")
	show.add_argument("id", type=int)
	return parser


def main(argv: list[str] | None = None) -> int:
	args = _parser().parse_args(argv)
	try:
		if args.command == "demo":
			return _demo(args)
		if args.command == "collector":
			return _collector(args)
		return _events(args)
	except SentryConfigError as e:
		print(str(e), file=sys.stderr)
		return 2
	except FileNotFoundError as e:
		print(str(e), file=sys.stderr)
		return 1
	except KeyboardInterrupt:
		return 130


def _demo(args: argparse.Namespace) -> int:
	from .demo import DemoApplication

	app = DemoApplication(storage=args.storage, show_output=args.show_output)
	try:
		return int(app.run())
	finally:
		app.Store.close()


def _collector(args: argparse.Namespace) -> int:
	from .collector.app import CollectorApplication

	overrides = {
		"host": args.host,
		"port": args.port,
		"storage": args.storage,
		"project_id": args.project_id,
		"key": args.key,
		"max_envelope_size": args.max_envelope_size,
		"max_decompressed_size": args.max_decompressed_size,
		"rate_limit": args.rate_limit,
		"rate_window": args.rate_window,
		"retention_age": args.retention_age,
		"retention_count": args.retention_count,
	}
	app = CollectorApplication(args=["-c", args.config] if args.config else [], overrides=overrides)
	try:
		return int(app.run())
	finally:
		app.Store.close()


def _events(args: argparse.Namespace) -> int:
	from .collector.viewer import (
		Printer,
		Source,
		format_item,
		format_list,
		format_list_line,
		list_header,
		parse_time,
		terminal_width,
	)

	source = Source(storage=args.storage, url=args.url)
	printer = Printer(sys.stdout)
	width = terminal_width()
	if args.view == "show":
		item = source.get(args.id)
		if item is None:
			print("No item {}.".format(args.id), file=sys.stderr)
			return 1
		if args.json:
			print(json.dumps(item, indent=2))
		else:
			printer.print(format_item(item, width))
		return 0

	filters: dict[str, typing.Any] = {
		"type": args.type,
		"level": args.level,
		"text": args.text,
		"release": args.release,
		"environment": args.environment,
	}
	if args.tag:
		key, _, value = args.tag.partition(":")
		if not value:
			print("--tag must be key:value", file=sys.stderr)
			return 2
		filters["tag"] = (key, value)
	if args.view == "list":
		try:
			since = parse_time(args.since) if args.since else None
			until = parse_time(args.until) if args.until else None
		except ValueError as e:
			print("--since/--until: {}".format(e), file=sys.stderr)
			return 2
		items = source.list(
			**filters, since=since, until=until, limit=args.limit, offset=args.offset, newest_first=True
		)
		items.reverse()
		if args.json:
			print(json.dumps(items, indent=2))
		else:
			printer.print(format_list(items, width))
		return 0

	# tail
	last = max([i["id"] for i in source.list(limit=1)] or [0])
	if not args.json:
		printer.print([list_header(width)])
	while True:
		for item in source.list(**filters, after_id=last, limit=500, newest_first=False):
			last = max(last, item["id"])
			if args.json:
				print(json.dumps(item), flush=True)
			else:
				printer.print([format_list_line(item, width)])
		time.sleep(0.5)


if __name__ == "__main__":
	sys.exit(main())
