"""
The ``asab-sentry`` command::

	asab-sentry demo                     # see it work, no Sentry account needed
	asab-sentry collector [options]      # a local Sentry-compatible endpoint
	asab-sentry events list|show|tail    # what the collector stored
	asab-sentry events issues            # errors grouped into issues, with counts
	asab-sentry outbox status|flush|purge DIR   # envelopes kept on disk ([sentry] outbox)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import typing
import urllib.error

from .__version__ import __version__
from .errors import SentryConfigError

DEFAULT_STORAGE = "asab-sentry.sqlite"


def _source_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
	"""
	``--storage``, ``--url`` and ``--json`` of ``events``: accepted before the view (``events --json list``) and
	after it (``events list --json``). After the view they default to SUPPRESS, so that an option given only
	before the view is not reset by the view's parser.
	"""

	def default(value: typing.Any) -> typing.Any:
		return value if defaults else argparse.SUPPRESS

	parser.add_argument(
		"--storage",
		default=default(DEFAULT_STORAGE),
		metavar="FILE",
		help="the collector's SQLite file (default: {})".format(DEFAULT_STORAGE),
	)
	parser.add_argument(
		"--url", default=default(None), help="read from a running collector instead, e.g. http://127.0.0.1:8999"
	)
	parser.add_argument("--json", action="store_true", default=default(False), help="JSON output, for scripts")


def _parser() -> argparse.ArgumentParser:
	parser = argparse.ArgumentParser(
		prog="asab-sentry",
		description="Sentry for ASAB microservices: the demo, a local Sentry-compatible collector and its viewer.",
		epilog="'{} COMMAND --help' shows a command's options.".format(command()),
	)
	parser.add_argument("--version", action="version", version="%(prog)s {}".format(__version__))
	commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

	demo = commands.add_parser(
		"demo",
		help="run the example application against an in-process collector and report what arrived",
		description="Runs the example application against an in-process collector on a free loopback port and "
		"reports what arrived. Exit code 0 only when everything expected arrived.",
	)
	demo.add_argument("--storage", default="asab-sentry-demo.sqlite", help="SQLite file (default: %(default)s)")
	demo.add_argument("--show-output", action="store_true", help="print the example application's console output")

	collector = commands.add_parser(
		"collector",
		help="run a local Sentry-compatible ingest endpoint",
		description="A local Sentry-compatible ingest endpoint with SQLite storage and a JSON API, for "
		"development (production goes to Sentry). Flags win over the [collector] section of the -c file.",
	)
	collector.add_argument("-c", "--config", metavar="FILE", help="ASAB configuration file with a [collector] section")
	collector.add_argument("--host", help="listen address (default 127.0.0.1)")
	collector.add_argument("--port", type=int, help="port (default 8999)")
	collector.add_argument("--storage", metavar="FILE", help="SQLite file (default {})".format(DEFAULT_STORAGE))
	collector.add_argument("--project-id", help="project id of the DSN (default 1)")
	collector.add_argument("--key", help="public key of the DSN (default asabsentry)")
	collector.add_argument("--max-envelope-size", type=int, metavar="BYTES", help="larger bodies get 413")
	collector.add_argument(
		"--max-decompressed-size", type=int, metavar="BYTES", help="bytes after decompression; larger get 413"
	)
	collector.add_argument("--rate-limit", type=int, metavar="N", help="envelopes per --rate-window; over it: 429")
	collector.add_argument("--rate-window", metavar="DURATION", help="e.g. 60s (default 60s)")
	collector.add_argument("--retention-age", metavar="DURATION", help="e.g. 7d (default); 0 keeps forever")
	collector.add_argument(
		"--retention-count", type=int, metavar="N", help="keep at most this many items (default 100000); 0: no limit"
	)

	events = commands.add_parser(
		"events",
		help="show what the collector stored",
		description="Reads the collector's storage file (or a running collector, --url).",
	)
	_source_options(events, defaults=True)
	views = events.add_subparsers(dest="view", title="views", metavar="VIEW")
	listing = views.add_parser("list", help="one line per item, newest last", description="One line per item.")
	tail = views.add_parser("tail", help="follow new items live", description="Prints new items as they arrive.")
	for view in (listing, tail):
		_source_options(view, defaults=False)
		view.add_argument("--type", help="event, transaction, session, client_report, ...")
		view.add_argument("--level", help="fatal, error, warning, info, debug")
		view.add_argument("--tag", metavar="KEY:VALUE", help="items with this tag")
		view.add_argument("--q", dest="text", metavar="TEXT", help="text in the title or exception type")
		view.add_argument("--release", help="items of this release")
		view.add_argument("--environment", help="items of this environment")
	listing.add_argument(
		"--since",
		metavar="TIME",
		help="items received at or after: a span back from now (15m, 2h, 1d), an ISO date/time (local) or unix time",
	)
	listing.add_argument("--until", metavar="TIME", help="items received before (like --since)")
	tail.add_argument(
		"--since",
		metavar="TIME",
		help="first the items received since then (15m, 2h, an ISO date/time), then the new ones",
	)
	listing.add_argument("--limit", type=int, default=50, help="at most this many, the newest (default: %(default)s)")
	listing.add_argument("--offset", type=int, default=0, help="skip this many of the newest (default: %(default)s)")
	listing.add_argument("--issue", type=int, metavar="ID", help="the events of this issue (see 'events issues')")
	issues = views.add_parser(
		"issues",
		help="errors and messages grouped into issues, with counts",
		description="Issues: events grouped by fingerprint, exception type and innermost in-app frame, or message "
		"template; with filters, counts are of the matching events.",
	)
	_source_options(issues, defaults=False)
	issues.add_argument("--level", help="fatal, error, warning, info, debug")
	issues.add_argument("--tag", metavar="KEY:VALUE", help="issues with events with this tag")
	issues.add_argument("--q", dest="text", metavar="TEXT", help="text in the title or exception type")
	issues.add_argument("--release", help="issues seen in this release")
	issues.add_argument("--environment", help="issues seen in this environment")
	issues.add_argument(
		"--sort",
		choices=("last_seen", "first_seen", "count"),
		default="last_seen",
		help="last_seen (default), first_seen or count; highest first",
	)
	issues.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
	show = views.add_parser("show", help="one item in full", description="One item in full.")
	_source_options(show, defaults=False)
	show.add_argument("id", type=int, help="the item's id (the first column of 'events list')")

	from .delivery import command as outbox_command

	outbox_command.add_parser(commands)
	return parser


def command() -> str:
	"""
	How to run this command again from the current directory, as printed advice: ``asab-sentry`` when that
	name on PATH is this installation, else the script next to the interpreter (``.venv/bin/asab-sentry`` in a
	virtualenv that is not activated), else ``python -m asab_sentry.cli``.
	"""
	script = os.path.join(os.path.dirname(sys.executable), "asab-sentry")
	on_path = shutil.which("asab-sentry")
	if not os.path.isfile(script):
		return "{} -m asab_sentry.cli".format(shlex.quote(_shortest(sys.executable)))
	if on_path and os.path.samefile(on_path, script):
		return "asab-sentry"
	return shlex.quote(_shortest(script))


def _shortest(path: str) -> str:
	relative = os.path.relpath(path)
	return relative if not relative.startswith(os.pardir) else os.path.abspath(path)


def main(argv: list[str] | None = None) -> int:
	"""The ``asab-sentry`` command; returns the exit code."""
	try:
		code = _main(argv)
		sys.stdout.flush()  # here, so that a closed pipe is handled below and not at the interpreter's exit
		return code
	except BrokenPipeError:
		# The reader went away (`| head`): end quietly, and keep the interpreter's final flush from failing too.
		try:
			devnull = os.open(os.devnull, os.O_WRONLY)
			os.dup2(devnull, sys.stdout.fileno())
		except (OSError, ValueError, AttributeError):
			pass
		return 141  # what a shell reports for a process ended by SIGPIPE


def _main(argv: list[str] | None) -> int:
	parser = _parser()
	args = parser.parse_args(argv)
	if args.command is None:
		parser.print_help()
		return 2
	if args.command == "events" and args.view is None:
		_subparser(parser, "events").print_help()
		return 2
	from .collector.store import StorageError

	try:
		if args.command == "demo":
			return _demo(args)
		if args.command == "collector":
			return _collector(args)
		if args.command == "outbox":
			from .delivery import command as outbox_command

			return outbox_command.run(args)
		return _events(args)
	except SentryConfigError as e:
		print(str(e), file=sys.stderr)
		return 2
	except (FileNotFoundError, StorageError) as e:
		print(str(e), file=sys.stderr)
		return 1
	except KeyboardInterrupt:
		return 130


def _issues(args: argparse.Namespace, source: typing.Any) -> int:
	from .collector.issue_list import format_issues, read_issues

	tag = None
	if args.tag:
		key, _, value = args.tag.partition(":")
		if not value:
			print("--tag must be key:value", file=sys.stderr)
			return 2
		tag = (key, value)
	issues = read_issues(
		source,
		level=args.level,
		tag=tag,
		text=args.text,
		release=args.release,
		environment=args.environment,
		sort=args.sort,
		limit=args.limit,
	)
	if args.json:
		print(json.dumps(issues, indent=2))
	else:
		from .collector.viewer import Printer, terminal_width

		Printer(sys.stdout).print(format_issues(issues, terminal_width()))
	return 0


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
	for action in parser._actions:
		if isinstance(action, argparse._SubParsersAction):
			return action.choices[name]
	raise KeyError(name)


def _demo(args: argparse.Namespace) -> int:
	from .demo import DemoApplication

	app = DemoApplication(storage=args.storage, show_output=args.show_output)
	try:
		return int(app.run())
	finally:
		app.Store.close()


def _collector(args: argparse.Namespace) -> int:
	from .collector.app import CollectorApplication, ListenError

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
	try:
		app = CollectorApplication(args=["-c", args.config] if args.config else [], overrides=overrides)
	except ListenError as e:
		print(str(e), file=sys.stderr)
		return 1
	try:
		return int(app.run())
	finally:
		app.Store.close()


def _events(args: argparse.Namespace) -> int:
	if args.url is not None and not args.url.startswith(("http://", "https://")):
		print(
			"--url {!r}: expected the collector's http:// or https:// URL, e.g. http://127.0.0.1:8999".format(args.url),
			file=sys.stderr,
		)
		return 2
	try:
		return _view(args)
	except BrokenPipeError:
		raise
	except urllib.error.HTTPError as e:
		print("The collector at {} answered {} {}.".format(args.url, e.code, e.reason), file=sys.stderr)
	except OSError as e:  # URLError included: refused, unknown host, timeout
		if not args.url:
			raise
		reason = e.reason if isinstance(e, urllib.error.URLError) else e
		if isinstance(reason, OSError) and reason.strerror:
			reason = reason.strerror
		print("Cannot reach the collector at {}: {}".format(args.url, reason), file=sys.stderr)
	except ValueError as e:  # a URL that is not http(s), or an answer that is not the collector's JSON
		if not args.url:
			raise
		print("Cannot read from the collector at {}: {}".format(args.url, e), file=sys.stderr)
	return 1


def _view(args: argparse.Namespace) -> int:
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

	if not args.url and not os.path.isfile(args.storage):
		print(
			"No storage file {!r}: start '{cmd} collector' and send to it, or pass --storage FILE "
			"(the demo's: asab-sentry-demo.sqlite) or --url URL.".format(args.storage, cmd=command()),
			file=sys.stderr,
		)
		return 1
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

	if args.view == "issues":
		return _issues(args, source)

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
		times = {}
		for option in ("since", "until"):
			value = getattr(args, option)
			try:
				times[option] = parse_time(value) if value else None
			except ValueError as e:
				print("--{} {}".format(option, e), file=sys.stderr)
				return 2
		since, until = times["since"], times["until"]
		if args.issue is not None:
			filters["issue_id"] = args.issue
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
	since = None
	if args.since:
		try:
			since = parse_time(args.since)
		except ValueError as e:
			print("--since {}".format(e), file=sys.stderr)
			return 2
	last = max([i["id"] for i in source.list(limit=1)] or [0])
	if since is not None:  # from the first item received since then
		first = source.list(since=since, limit=1, newest_first=False)
		last = first[0]["id"] - 1 if first else last
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
