#!/usr/bin/env python3
"""
The event loop's own share of an error storm, measured, never asserted: run.py's storm (2000 errors per second
logged with ``logger.exception()`` from the loop for 5 s) with no delivery at all (its no-op transport), so that
what is left is what capturing costs the loop. For plain logging, sentry-sdk as asab.sentry sets it up, and
asab-sentry, each in a fresh process, in rounds of rotated order:

	.venv/bin/python benchmarks/loop.py              # 5 rounds, about 2 minutes
	.venv/bin/python benchmarks/loop.py --quick      # a smoke run: the numbers mean nothing

Per set-up: the loop's worst lag (median [range] over rounds), errors per second achieved, the full (generation 2)
garbage collections during the storm and the longest, and the first logged error's duration (the one-off work
a first event may do). Compare two checkouts by running this file of each, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SETUPS = ("plain", "sdk", "ours")


def worker(kind: str, seconds: float) -> dict:
	"""One storm in this process: run.py's set-up and storm, with the garbage collector and the first error watched."""
	import gc
	import time

	sys.path.insert(0, HERE)
	import run

	full: list[float] = []
	started = [0.0]

	def watch(phase, info):
		if info["generation"] == 2:
			if phase == "start":
				started[0] = time.perf_counter()
			else:
				full.append((time.perf_counter() - started[0]) * 1e3)

	calls: list[float] = []
	middle = run.middle

	def timed_middle(table):
		# The storm calls this, then logs its error: the first error costs the time between the first two calls.
		if len(calls) < 2:
			calls.append(time.perf_counter())
		return middle(table)

	setup = run.setup

	def setup_and_watch(*args, **kwargs):
		svc = setup(*args, **kwargs)
		gc.callbacks.append(watch)
		return svc

	run.middle = timed_middle
	run.setup = setup_and_watch
	result = run.work_storm(kind, None, 2000, seconds, False)
	result.update(
		full_gcs=len(full),
		longest_gc_ms=max(full, default=0.0),
		first_error_ms=(calls[1] - calls[0]) * 1e3 if len(calls) == 2 else None,
	)
	return result


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("--rounds", type=int, default=5)
	parser.add_argument("--quick", action="store_true", help="one round of 0.5 s storms: the numbers mean nothing")
	parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
	args = parser.parse_args()
	if args.worker:
		print(json.dumps(worker(args.worker[0], float(args.worker[1]))))
		return
	rounds, seconds = (1, 0.5) if args.quick else (args.rounds, 5.0)
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	results: dict[str, list[dict]] = {kind: [] for kind in SETUPS}
	for r in range(rounds):
		for kind in SETUPS[r % 3 :] + SETUPS[: r % 3]:
			out = subprocess.run(
				[sys.executable, os.path.abspath(__file__), "--worker", kind, str(seconds)],
				capture_output=True,
				text=True,
				timeout=600,
				env=env,
				cwd=tempfile.gettempdir(),
				check=True,
			)
			results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
		print("  ... round {}/{} done".format(r + 1, rounds), file=sys.stderr, flush=True)
	if args.quick:
		print("--quick: a smoke run; these numbers mean nothing")
	print(
		"storm 2000 errors/s for {:g} s from the event loop, no delivery (no-op transport); {} rounds".format(
			seconds, rounds
		)
	)
	print("| set-up | loop max lag (ms) | errors/s | full collections per storm (longest ms) | first error (ms) |")
	print("| --- | --- | --- | --- | --- |")
	for kind in SETUPS:
		runs = results[kind]
		lags = [r["lag_ms"] for r in runs]
		firsts = [r["first_error_ms"] for r in runs if r["first_error_ms"] is not None]
		print(
			"| {} | {:.1f} [{:.1f}-{:.1f}] | {:.0f} | {} ({:.1f}) | {} |".format(
				kind,
				statistics.median(lags),
				min(lags),
				max(lags),
				statistics.median(r["rate"] for r in runs),
				"/".join(str(r["full_gcs"]) for r in runs),
				max(r["longest_gc_ms"] for r in runs),
				"/".join("{:.1f}".format(f) for f in firsts) or "-",
			)
		)


if __name__ == "__main__":
	main()
