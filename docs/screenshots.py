"""
Regenerate the screenshots of docs/collector.md: a collector with the browser tests' data (tests/ui_data.py,
sent by real SDK clients), photographed by Debian's headless Chromium through Playwright.

	.venv/bin/python docs/screenshots.py

Needs /usr/bin/chromium (``apt-get install -y chromium``) and the test extra (playwright).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from playwright.sync_api import sync_playwright

from asab_sentry.collector.server import start_in_thread
from asab_sentry.collector.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "docs", "images")
ARGS = [
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
]


def main() -> None:
	os.makedirs(IMAGES, exist_ok=True)
	with tempfile.TemporaryDirectory() as tmp, start_in_thread(Store(os.path.join(tmp, "s.sqlite"))) as running:
		for args in ([running.dsn], [running.dsn, "connection to db1 refused"]):
			subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ui_data.py"), *args], check=True)
		store = running.Collector.Store
		error = store.list(type="event", text="KeyError", limit=1)[0]["id"]
		trace = store.list(type="transaction", limit=1)[0]["trace_id"]
		shots = {
			"collector-issues.png": ("/", None),
			"collector-event.png": ("/events/{}".format(error), 1300),
			"collector-trace.png": ("/traces/{}".format(trace), 420),
			"collector-logs.png": ("/logs", 420),
		}
		with sync_playwright() as playwright:
			browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
			page = browser.new_page(viewport={"width": 1200, "height": 520})
			for name, (path, height) in shots.items():
				page.goto(running.url + path)
				page.wait_for_selector("#live-status.on")
				clip = {"x": 0, "y": 0, "width": 1200, "height": height} if height else None
				page.screenshot(path=os.path.join(IMAGES, name), full_page=bool(height), clip=clip)
				print(os.path.join("docs", "images", name))
			browser.close()


if __name__ == "__main__":
	main()
