"""
What the speed work must not change, and the start-up and internal-logger behaviour it relies on.
(Speed itself is measured in benchmarks/, never asserted here.)
"""

import json
import logging
import os
import subprocess
import sys

import sentry_sdk
import sentry_sdk.utils

from conftest import REPO

START_WITHOUT_WEB = """
import json, sys
import asab
import asab_sentry
asab.Config.read_dict({"sentry": {"data_source_name": "http://key@127.0.0.1:9/1"}})
app = asab.Application(args=[])
asab_sentry.SentryService(app)
import sentry_sdk
print(json.dumps({"aiohttp": "aiohttp" in sys.modules, "integrations": sorted(sentry_sdk.get_client().integrations)}))
"""


def run_python(code: str) -> dict:
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	out = subprocess.run(
		[sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=True
	)
	return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_service_without_asab_web_does_not_import_aiohttp():
	result = run_python(START_WITHOUT_WEB)
	assert result["aiohttp"] is False
	assert "aiohttp" not in result["integrations"]


def test_a_service_with_asab_web_gets_the_aiohttp_integration():
	result = run_python(START_WITHOUT_WEB.replace("import asab\n", "import asab\nimport asab.web\n", 1))
	assert result["aiohttp"] is True
	assert "aiohttp" in result["integrations"]


def test_sentry_sdk_internal_debug_logging_is_quiet_unless_debug(sentry_capture):
	sentry_capture.application()
	assert sentry_sdk.utils.logger.getEffectiveLevel() == logging.WARNING


def test_sentry_sdk_internal_debug_logging_with_debug_on(sentry_capture):
	sentry_capture.configure({"sentry": {"debug": "true"}})
	sentry_capture.application()
	assert sentry_sdk.utils.logger.getEffectiveLevel() == logging.DEBUG
