"""
The official JavaScript SDK (``@sentry/node``) for the end-to-end suite: installed by npm into a cache
(``.e2e-cache/sentry-node/`` in the repository, or under ``$ASAB_SENTRY_E2E_CACHE``) once, then reused;
`run_app` runs ``tests/e2e/js/app.mjs`` with node against a DSN.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

from bugsink import cache_dir

SENTRY_NODE = "@sentry/node@11"
APP = pathlib.Path(__file__).resolve().parent / "js" / "app.mjs"


class JavaScriptSdkUnavailable(Exception):
	"""node or npm is missing, or npm could not install the SDK; the message says why."""


def ensure_installed() -> pathlib.Path:
	"""The directory with ``node_modules/@sentry/node``, installed once by npm."""
	node, npm = shutil.which("node"), shutil.which("npm")
	if node is None or npm is None:
		raise JavaScriptSdkUnavailable("node and npm are needed (found node={}, npm={})".format(node, npm))
	directory = cache_dir() / "sentry-node"
	marker = directory / "installed.txt"
	if marker.exists() and marker.read_text().strip() == SENTRY_NODE and (directory / "node_modules").is_dir():
		return directory
	try:
		directory.mkdir(parents=True, exist_ok=True)
		(directory / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
	except OSError as e:
		raise JavaScriptSdkUnavailable("cannot prepare {}: {}".format(directory, e))
	try:
		out = subprocess.run(
			[npm, "install", "--no-audit", "--no-fund", "--loglevel=error", SENTRY_NODE],
			cwd=directory,
			capture_output=True,
			text=True,
			timeout=600,
		)
	except subprocess.TimeoutExpired:
		raise JavaScriptSdkUnavailable("npm install {} took more than 600 s".format(SENTRY_NODE))
	if out.returncode != 0:
		lines = [ln for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
		raise JavaScriptSdkUnavailable("npm install {} failed: {}".format(SENTRY_NODE, " | ".join(lines[-3:])))
	marker.write_text(SENTRY_NODE)
	return directory


def run_app(dsn: str, timeout: float = 120) -> dict:
	"""Run the JavaScript application against ``dsn``; return what it printed (the ids it captured)."""
	directory = ensure_installed()
	script = directory / APP.name
	shutil.copyfile(APP, script)  # ES modules resolve packages from the script's own directory
	env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "NODE_"))}
	env["SENTRY_DSN"] = dsn
	out = subprocess.run(["node", str(script)], cwd=directory, capture_output=True, text=True, timeout=timeout, env=env)
	if out.returncode != 0:
		raise AssertionError("node {} failed ({}): {}".format(APP.name, out.returncode, out.stderr[-3000:]))
	return json.loads(out.stdout.strip().splitlines()[-1])
