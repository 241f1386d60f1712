"""
``asab-sentry outbox status|flush|purge DIR``: look into, send or empty an outbox while no service uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import typing

from . import outbox as outbox_module


def add_parser(commands: typing.Any) -> None:
	"""Add the ``outbox`` command to the ``asab-sentry`` parser's sub-commands."""
	parser = commands.add_parser(
		"outbox",
		help="status, flush or purge an outbox directory ([sentry] outbox)",
		description="An outbox holds envelopes that were not yet accepted by Sentry. 'flush' and 'purge' need "
		"the directory to be free: stop the service that uses it first.",
	)
	actions = parser.add_subparsers(dest="outbox_action", title="actions", metavar="ACTION")
	status = actions.add_parser("status", help="envelopes, bytes, oldest, corrupt files, which process uses it")
	status.add_argument("--json", action="store_true", help="JSON output, for scripts")
	flush = actions.add_parser("flush", help="send everything to Sentry now, with a progress bar")
	flush.add_argument("--dsn", help="where to send (default: the SENTRY_DSN environment variable)")
	flush.add_argument(
		"--interval", type=float, default=0.1, metavar="SECONDS", help="between two sends (default: %(default)s)"
	)
	flush.add_argument(
		"--timeout", type=float, default=600.0, metavar="SECONDS", help="give up after (default: %(default)s)"
	)
	actions.add_parser("purge", help="delete every envelope (and the corrupt/ files) without sending")
	for action in actions.choices.values():
		action.add_argument("directory", metavar="DIR", help="the outbox directory")


def run(args: argparse.Namespace) -> int:
	if args.outbox_action is None:
		print("asab-sentry outbox: give an action: status, flush or purge (see --help)", file=sys.stderr)
		return 2
	if args.outbox_action == "status":
		return _status(args)
	if args.outbox_action == "purge":
		return _purge(args)
	return _flush(args)


def _status(args: argparse.Namespace) -> int:
	s = outbox_module.status(args.directory)
	if args.json:
		print(json.dumps(s))
		return 0
	oldest = (
		"-" if s["oldest"] is None else "{} ({:.0f} s ago)".format(time.ctime(s["oldest"]), time.time() - s["oldest"])
	)
	print("outbox     {}".format(s["directory"]))
	print("envelopes  {}".format(s["envelopes"]))
	print("bytes      {}".format(s["bytes"]))
	print("oldest     {}".format(oldest))
	print("corrupt    {}".format(s["corrupt"]))
	print("in use by  {}".format("pid " + s["locked_by"] if s["locked_by"] else "-"))
	return 0


def _not_an_outbox(directory: str) -> bool:
	"""
	True (and one line said) when `directory` was never an outbox: no ``.lock`` and no envelope file.
	Opening it would chmod it to 0700, create ``.lock`` and (purge) delete its ``corrupt/``: a mistyped path
	(the service's data directory instead of its outbox) must not be touched.
	"""
	if os.path.exists(os.path.join(directory, outbox_module.LOCK_NAME)):
		return False
	if any(name.endswith(outbox_module.SUFFIX) for name in os.listdir(directory)):
		return False
	print(
		"{} is not an outbox (no {} and no *{} file); nothing done".format(
			os.path.abspath(directory), outbox_module.LOCK_NAME, outbox_module.SUFFIX
		),
		file=sys.stderr,
	)
	return True


def _open(directory: str) -> outbox_module.Outbox | None:
	if not os.path.isdir(directory):
		raise FileNotFoundError("No outbox directory {}".format(os.path.abspath(directory)))
	if _not_an_outbox(directory):
		return None
	try:
		return outbox_module.Outbox(directory, max_size=1 << 62, max_age=float("inf"))
	except outbox_module.OutboxLocked as e:
		print(str(e).replace("each process needs its own outbox directory", "stop it first"), file=sys.stderr)
		return None


def _purge(args: argparse.Namespace) -> int:
	box = _open(args.directory)
	if box is None:
		return 1
	try:
		files = box.files()
		for entry in files:
			box.remove(entry.path)
		corrupt = os.path.join(box.Directory, outbox_module.CORRUPT_DIR)
		removed_corrupt = len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0
		shutil.rmtree(corrupt, ignore_errors=True)
	finally:
		box.close()
	print(
		"Removed {} envelope(s) ({} bytes){} from {}.".format(
			len(files),
			sum(f.size for f in files),
			" and {} corrupt file(s)".format(removed_corrupt) if removed_corrupt else "",
			box.Directory,
		)
	)
	return 0


def _flush(args: argparse.Namespace) -> int:
	from ..settings import mask_dsn, parse_dsn
	from .http import CertificatesError
	from .transport import DeliveryOptions, DeliveryTransport

	dsn = args.dsn or os.environ.get("SENTRY_DSN", "").strip()
	if not dsn:
		print("asab-sentry outbox flush: give --dsn or set SENTRY_DSN", file=sys.stderr)
		return 2
	dsn = parse_dsn("option", "--dsn", dsn) if args.dsn else parse_dsn("environment", "SENTRY_DSN", dsn)
	if not os.path.isdir(args.directory):
		raise FileNotFoundError("No outbox directory {}".format(os.path.abspath(args.directory)))
	if _not_an_outbox(args.directory):
		return 1
	options = DeliveryOptions(
		outbox=args.directory,
		outbox_max_size=1 << 62,
		outbox_max_age=float("inf"),
		drain_interval=max(0.0, args.interval),
		drain_start_jitter=0.0,
		max_concurrent_requests=1,
	)
	# Counted before the transport starts: its senders may have sent some by the time it is asked.
	total = outbox_module.status(args.directory)["envelopes"]
	try:
		transport = DeliveryTransport({"dsn": dsn, "send_client_reports": False}, options)
	except outbox_module.OutboxLocked as e:
		print(str(e).replace("each process needs its own outbox directory", "stop it first"), file=sys.stderr)
		return 1
	except CertificatesError as e:
		print("environment variable {} = {!r}: {}".format(e.Variable, e.Path, e), file=sys.stderr)
		return 2
	bar = _progress(total, "to {}".format(mask_dsn(dsn)))
	deadline = time.monotonic() + args.timeout
	try:
		while True:
			left = transport.pending()
			bar(total - left)
			if left == 0 or time.monotonic() > deadline:
				break
			time.sleep(0.1)
	except KeyboardInterrupt:
		pass
	finally:
		bar(None)
		counters = transport.Losses.snapshot()
		transport.kill()
	dropped = {k[len("dropped_") :]: v for k, v in counters.items() if k.startswith("dropped_")}
	left = outbox_module.status(args.directory)["envelopes"]
	print(
		"{} of {} envelope(s) sent{}; {} left in {}.".format(
			counters.get("sent", 0),
			total,
			"".join(", {} dropped ({})".format(n, reason) for reason, n in sorted(dropped.items())),
			left,
			os.path.abspath(args.directory),
		)
	)
	return 0 if left == 0 else 1


def _progress(total: int, what: str) -> typing.Callable[[int | None], None]:
	"""``update(done)``; ``update(None)`` closes. A rich progress bar when rich is installed, else a plain line."""
	try:
		import rich.console
		import rich.progress
	except ImportError:
		rich = None  # type: ignore[assignment]
	if rich is not None:
		progress = rich.progress.Progress(
			rich.progress.TextColumn("flushing {task.description}"),
			rich.progress.BarColumn(),
			rich.progress.MofNCompleteColumn(),
			rich.progress.TimeRemainingColumn(),
			console=rich.console.Console(stderr=True),
		)
		task = progress.add_task(what, total=total)
		progress.start()

		def update(done: int | None) -> None:
			if done is None:
				progress.stop()
			else:
				progress.update(task, completed=done)

		return update

	def plain(done: int | None) -> None:
		if done is None:
			sys.stderr.write("\n")
		else:
			sys.stderr.write("\rflushing {}: {}/{}".format(what, done, total))
		sys.stderr.flush()

	return plain
