"""asab-sentry demo (the README's first command) and the example application."""

import json
import os
import re
import subprocess
import sys

from asab_sentry.collector.store import Store
from asab_sentry.demo import expected_checks, find_example

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env():
	return {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "PYTEST"))}


def test_demo_succeeds_and_reports(tmp_path, referee):
	out = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "demo", "--storage", str(tmp_path / "demo.sqlite")],
		capture_output=True,
		text=True,
		timeout=180,
		env=clean_env(),
		cwd=tmp_path,
	)
	assert out.returncode == 0, out.stdout + out.stderr
	assert "Everything the documentation page promises arrived." in out.stdout
	assert out.stdout.count("[ok]") == len(expected_checks())
	# What arrived, as the terminal viewer lists it: a header line, then one line per item.
	assert re.search(r"(?m)^ +ID TIME +TYPE +LEVEL +TITLE", out.stdout), out.stdout
	assert re.search(r"(?m)^ +1 \d\d:\d\d:\d\d ", out.stdout), out.stdout
	assert "asab-sentry events --storage {} show".format(tmp_path / "demo.sqlite") in out.stdout
	listing = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", str(tmp_path / "demo.sqlite"), "list"],
		capture_output=True,
		text=True,
		timeout=60,
	)
	assert "KeyError" in listing.stdout and "multiple tasks" in listing.stdout
	# What the demo's collector stored is valid by Relay's rules too.
	store = Store(str(tmp_path / "demo.sqlite"))
	for row in store.list(limit=1000):
		if row["type"] in ("event", "transaction"):
			referee.check(row["type"], json.dumps(store.get(row["id"])["payload"]).encode())
	assert referee.checked >= 7


def test_checks_fail_when_nothing_arrived():
	assert not any(check.test([], []) for check in expected_checks())


def test_example_runs_as_it_stands_without_sentry_section(tmp_path):
	"""The documentation page's guard: without a [sentry] section the app runs and reports nothing."""
	out = subprocess.run(
		[sys.executable, str(find_example())], capture_output=True, text=True, timeout=60, env=clean_env(), cwd=tmp_path
	)
	assert out.returncode == 0, out.stderr
	assert "No [sentry] section in the configuration" in out.stderr


def test_example_is_the_repository_file():
	assert find_example() == __import__("pathlib").Path(REPO, "examples", "my_app.py")
