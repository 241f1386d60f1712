"""SentryService as a whole: start-up, identity, environment, over real HTTP to a collector."""

import json
import logging
import os
import subprocess
import sys

import asab
import pytest
import sentry_sdk

import asab_sentry
from helpers import App, configure, payloads, run_app, text

L = logging.getLogger("tests.service")


def test_public_api_is_locked():
	assert sorted(asab_sentry.__all__) == ["Measure", "SentryConfigError", "SentryService", "Settings", "__version__"]
	for name in asab_sentry.__all__:
		assert hasattr(asab_sentry, name)
	assert isinstance(asab_sentry.__version__, str)


def test_import_changes_nothing():
	code = (
		"import sys, asab, sentry_sdk\n"
		"import asab_sentry, asab_sentry.testing, asab_sentry.collector.server\n"
		"assert 'sentry' not in asab.Config.sections(), asab.Config.sections()\n"
		"assert 'sentry:logging' not in asab.Config.sections()\n"
		"assert not sentry_sdk.get_client().is_active()\n"
		"print('clean')\n"
	)
	out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
	assert out.returncode == 0, out.stderr
	assert out.stdout.strip() == "clean"


def test_missing_dsn_stops_startup():
	configure("[sentry]\n")
	with pytest.raises(asab_sentry.SentryConfigError) as info:
		App()
	assert "SENTRY_DSN" in str(info.value)
	assert not sentry_sdk.get_client().is_active()


def test_missing_dsn_stops_startup_from_initialize():
	"""A config error raised in async initialize() must stop the app, not be logged and ignored by asab."""

	class Late(asab.Application):
		async def initialize(self):
			self.SentryService = asab_sentry.SentryService(self)

		async def main(self):
			self.stop()

	configure("[sentry]\n")
	app = Late(args=[])
	with pytest.raises(asab_sentry.SentryConfigError):
		app.run()


def test_invalid_option_stops_startup_with_one_line(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "2"}})
	with pytest.raises(SystemExit) as info:
		App()
	assert str(info.value) == "[sentry] traces_sample_rate = '2': expected a number from 0 to 1 (0.25 means 25 %)"


def test_config_error_exits_the_process_with_one_line():
	code = (
		"import asab, asab_sentry\n"
		"asab.Config.read_string('[sentry]\\nsample_rate=lots\\n')\n"
		"class A(asab.Application):\n"
		"    def __init__(self):\n"
		"        super().__init__(args=[])\n"
		"        asab_sentry.SentryService(self)\n"
		"A()\n"
	)
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	env["SENTRY_DSN"] = "https://k@127.0.0.1:9/1"
	out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
	assert out.returncode == 1
	assert (
		out.stderr.strip().splitlines()[-1]
		== "[sentry] sample_rate = 'lots': expected a number from 0 to 1 (0.25 means 25 %)"
	)
	assert "Traceback" not in out.stderr


def test_empty_section_with_sentry_dsn_delivers(collector):
	os.environ["SENTRY_DSN"] = collector.dsn
	configure("[sentry]\n")

	async def body(app):
		app.SentryService.capture_message("hello from env dsn")

	run_app(body)
	(event,) = payloads(collector)
	assert text(event) == "hello from env dsn"


def test_environment_release_server_name_and_identity_tags(collector, tmp_path):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": "v23.40-alpha"}))
	os.environ.update(NODE_ID="node-1", SERVICE_ID="svc", INSTANCE_ID="svc-01", SITE_ID="site-7")
	configure(
		{
			"general": {"manifest": str(manifest)},
			"sentry": {"data_source_name": collector.dsn, "environment": "hogwarts", "traces_sample_rate": "1"},
		}
	)

	async def body(app):
		async def in_task():
			L.error("from a task")

		await app.Loop.create_task(in_task())
		with app.SentryService.transaction("task", "identity"):
			pass

	app = run_app(body)
	(event,) = payloads(collector)
	(txn,) = payloads(collector, type="transaction")
	for item in (event, txn):
		assert item["environment"] == "hogwarts"
		assert item["release"] == "App@v23.40-alpha"
		assert item["server_name"] == app.HostName
		assert item["tags"] == {
			"appclass": "App",
			"node_id": "node-1",
			"service_id": "svc",
			"instance_id": "svc-01",
			"site_id": "site-7",
		}
	assert event["contexts"]["manifest"] == {"version": "v23.40-alpha"}


def test_environment_falls_back_to_site_id(collector):
	os.environ["SITE_ID"] = "site-9"
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		app.SentryService.capture_message("where am I")

	run_app(body)
	(event,) = payloads(collector)
	assert event["environment"] == "site-9"


def test_configured_release_and_server_name_win(collector, tmp_path):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": "v1"}))
	configure(
		{
			"general": {"manifest": str(manifest)},
			"sentry": {"data_source_name": collector.dsn, "release": "my-release", "server_name": "box-3"},
		}
	)

	async def body(app):
		app.SentryService.capture_message("release check")

	run_app(body)
	(event,) = payloads(collector)
	assert event["release"] == "my-release" and event["server_name"] == "box-3"


def test_identity_tags_when_service_is_created_in_initialize(collector):
	"""asab's built-in loses global tags in this case: they went to one task's isolation scope."""
	os.environ["NODE_ID"] = "node-late"
	configure({"sentry": {"data_source_name": collector.dsn}})

	class Late(asab.Application):
		async def initialize(self):
			self.SentryService = asab_sentry.SentryService(self)

		async def main(self):
			async def other_task():
				L.error("from another task")

			await self.Loop.create_task(other_task())
			self.stop()

	Late(args=[]).run()
	(event,) = payloads(collector)
	assert event["tags"]["node_id"] == "node-late"
	assert event["tags"]["appclass"] == "Late"


def test_max_value_length_is_applied(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "max_value_length": "300"}})

	async def body(app):
		L.error("x" * 5000)

	run_app(body)
	(event,) = payloads(collector)
	assert len(event["logentry"]["formatted"]) <= 300


def test_sample_rate_zero_sends_no_errors(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "sample_rate": "0"}})

	async def body(app):
		L.error("sampled out")
		app.SentryService.capture_message("sampled out too")

	run_app(body)
	assert payloads(collector, timeout=0.5) == []


def test_include_local_variables_off(sentry_capture):
	sentry_capture.configure({"sentry": {"include_local_variables": "false"}})
	app = sentry_capture.application()
	secret_local = "visible?"  # noqa: F841
	try:
		raise ValueError("no locals")
	except ValueError as e:
		app.get_service("asab.SentryService").capture_exception(e)
	event = sentry_capture.find(exception_type="ValueError")
	frames = event["exception"]["values"][0]["stacktrace"]["frames"]
	assert all("vars" not in f for f in frames)


def test_unknown_option_warns(sentry_capture, caplog):
	sentry_capture.configure("[sentry]\ndsn=oops\n")
	with caplog.at_level(logging.WARNING, logger="asab_sentry.service"):
		sentry_capture.application()
	assert "Unknown option [sentry] dsn is ignored." in caplog.text


def test_invalid_manifest_warns_and_continues(sentry_capture, tmp_path, caplog):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text("{not json")
	sentry_capture.configure({"general": {"manifest": str(manifest)}})
	with caplog.at_level(logging.WARNING, logger="asab_sentry.identity"):
		app = sentry_capture.application()
	warnings = [r for r in caplog.records if r.name == "asab_sentry.identity"]
	assert len(warnings) == 1 and "cannot be used" in warnings[0].getMessage()
	app.get_service("asab.SentryService").capture_message("still works")
	assert sentry_capture.find(message="still works")["release"] != "App@"


def test_manifest_found_in_working_directory(sentry_capture, tmp_path, monkeypatch):
	(tmp_path / "MANIFEST.json").write_text(json.dumps({"version": "v9"}))
	monkeypatch.chdir(tmp_path)
	app = sentry_capture.application()
	assert app.get_service("asab.SentryService").Identity.release == "Application@v9"


def test_spotlight_receives_envelopes_without_dsn(collector):
	configure({"sentry": {"spotlight": collector.url + "/stream"}})

	async def body(app):
		app.SentryService.capture_message("to spotlight")

	run_app(body)
	(event,) = payloads(collector)
	assert text(event) == "to spotlight"


def test_spotlight_alongside_dsn(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "spotlight": collector.url + "/stream"}})

	async def body(app):
		app.SentryService.capture_message("twice")

	run_app(body)
	rows = payloads(collector, count=2)
	assert len(rows) == 2
	projects = {r["project"] for r in collector.Collector.Store.list()}
	assert projects == {"1", None}  # one through the DSN, one through /stream


def test_options_reach_sentry_sdk(sentry_capture):
	sentry_capture.configure(
		{"sentry": {"debug": "true", "shutdown_timeout": "750ms", "sample_rate": "0.5", "traces_sample_rate": "0.25"}}
	)
	sentry_capture.application()
	options = sentry_sdk.get_client().options
	assert options["debug"] is True
	assert options["shutdown_timeout"] == 0.75
	assert options["sample_rate"] == 0.5 and options["traces_sample_rate"] == 0.25
	assert options["max_value_length"] == 8192 and options["include_local_variables"] is True
	# sentry-sdk's own LoggingIntegration and AsyncioIntegration are off: this package does their jobs right.
	names = set(sentry_sdk.get_client().integrations)
	assert "logging" not in names and "asyncio" not in names
	assert {"excepthook", "threading", "atexit", "dedupe"} <= names


def test_identity_of_a_second_service_replaces_the_first(sentry_capture):
	os.environ["NODE_ID"] = "first-node"
	first = sentry_capture.application()
	import asab.abc.singleton

	del asab.abc.singleton.Singleton._instances[type(first)]
	del os.environ["NODE_ID"]
	second = sentry_capture.application()
	second.get_service("asab.SentryService").capture_message("second")
	assert "node_id" not in sentry_capture.find(message="second")["tags"]


def test_manifest_version_that_is_no_valid_release_is_fixed(sentry_capture, tmp_path, caplog):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": "feature/new thing"}))
	sentry_capture.configure({"general": {"manifest": str(manifest)}})
	with caplog.at_level(logging.WARNING, logger="asab_sentry.identity"):
		app = sentry_capture.application()
	app.get_service("asab.SentryService").capture_message("fixed release")
	assert sentry_capture.find(message="fixed release")["release"] == "Application@feature-new-thing"
	assert "does not make a valid Sentry release" in caplog.text


@pytest.mark.parametrize("version,release", [(2, "Application@2"), (1.5, "Application@1.5")])
def test_manifest_version_that_is_a_number(sentry_capture, tmp_path, version, release):
	"""A JSON number as the version ("version": 2) gave no release, silently."""
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": version}))
	sentry_capture.configure({"general": {"manifest": str(manifest)}})
	sentry_capture.application().get_service("asab.SentryService").capture_message("numbered")
	assert sentry_capture.find(message="numbered")["release"] == release


def test_manifest_version_that_is_not_text_is_said(sentry_capture, tmp_path, caplog):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": ["1", "2"]}))
	sentry_capture.configure({"general": {"manifest": str(manifest)}})
	with caplog.at_level(logging.WARNING, logger="asab_sentry.identity"):
		sentry_capture.application()
	assert "Manifest version ['1', '2'] is not text" in caplog.text


def test_asab_sentry_keyword_names_keep_working(sentry_capture):
	"""Code written for asab.sentry passes its keyword names; "the methods stay the same" (README, migration)."""
	sentry_capture.configure({"sentry": {"traces_sample_rate": "1.0"}})
	svc = sentry_capture.application().get_service("asab.SentryService")
	svc.set_context(section_name="import", context={"rows": 3})
	svc.set_tags(tags_dict={"foo": "bar"})
	with svc.transaction(span_operation="task", span_name="nightly"):
		with svc.span(operation="db", description="load"):
			pass
	svc.capture_message("after")
	event = sentry_capture.find(message="after")
	assert event["contexts"]["import"] == {"rows": 3}
	assert event["tags"]["foo"] == "bar"
	txn = sentry_capture.find(type="transaction", message="nightly")
	assert txn["contexts"]["trace"]["op"] == "task"
	assert [(s["op"], s["description"]) for s in txn["spans"]] == [("db", "load")]
