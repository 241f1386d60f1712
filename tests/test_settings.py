"""[sentry] / [sentry:logging] / SENTRY_* → Settings, validated in one place."""

import configparser
import dataclasses
import logging

import pytest

from asab_sentry import SentryConfigError
from asab_sentry.settings import load_settings, mask_dsn

DSN = "https://public123@o1.ingest.sentry.io/42"


def settings(ini: str = "", env: dict | None = None, **kwargs):
	config = configparser.ConfigParser()
	config.read_string(ini)
	return load_settings(config, env or {}, **kwargs)


def error(ini: str = "", env: dict | None = None) -> str:
	with pytest.raises(SentryConfigError) as info:
		settings(ini, env)
	message = str(info.value)
	assert "\n" not in message, "the answer to bad input is one line"
	return message


def test_dsn_from_config():
	assert settings("[sentry]\ndata_source_name={}\n".format(DSN)).dsn == DSN


def test_empty_section_and_sentry_dsn_variable():
	assert settings("[sentry]\n", {"SENTRY_DSN": DSN}).dsn == DSN


def test_config_wins_over_variable():
	other = "https://other@localhost/2"
	assert settings("[sentry]\ndata_source_name={}\n".format(DSN), {"SENTRY_DSN": other}).dsn == DSN


def test_no_dsn_anywhere_names_both_ways():
	message = error("[sentry]\n")
	assert "data_source_name" in message and "SENTRY_DSN" in message


def test_no_dsn_allowed_with_spotlight():
	s = settings("[sentry]\nspotlight=true\n")
	assert s.dsn is None and s.spotlight == "http://localhost:8969/stream"


def test_spotlight_url_and_variable():
	assert settings("[sentry]\nspotlight=http://127.0.0.1:9000/stream\n").spotlight == "http://127.0.0.1:9000/stream"
	assert settings("[sentry]\n", {"SENTRY_SPOTLIGHT": "1"}).spotlight == "http://localhost:8969/stream"
	assert settings("[sentry]\nspotlight=false\n", {"SENTRY_DSN": DSN}).spotlight is None


def test_spotlight_invalid():
	message = error("[sentry]\nspotlight=maybe\n")
	assert "[sentry] spotlight = 'maybe'" in message


@pytest.mark.parametrize(
	"url",
	[
		"http://localhost:99999/stream",
		"http://localhost:port/stream",
		"http://[::1/stream",
		"http://:8969/stream",
		"http://host/a b",
		"http://host/strëam",  # urllib.request cannot send a non-ASCII path: every envelope failed
		"http://host\u200b:8969/stream",
		"http://host:8969/stream\x7f",
		"http://@host:8969/stream",
		"http://host:8969\\@evil/stream",
	],
)
def test_spotlight_malformed_url(url):
	message = error("[sentry]\nspotlight={}\n".format(url))
	assert "[sentry] spotlight" in message and "http(s)://host[:port]/path" in message


def test_spotlight_url_with_ipv6_and_https():
	assert settings("[sentry]\nspotlight=http://[::1]:8969/stream\n").spotlight == "http://[::1]:8969/stream"
	assert (
		settings("[sentry]\nspotlight=https://spotlight.local/stream\n").spotlight == "https://spotlight.local/stream"
	)


def test_malformed_dsn_masks_the_key():
	message = error("[sentry]\ndata_source_name=https://secretkey@/no-project\n")
	assert "secretkey" not in message
	assert "[sentry] data_source_name = 'https://***@/no-project'" in message


@pytest.mark.parametrize("dsn", ["http://k@h\u0151st/1", "http://k\u00e9y@host/1", "http://k\x01@host/1"])
def test_dsn_not_printable_ascii(dsn):
	"""The sender writes the host and the key into HTTP headers: such a DSN killed every sender thread."""
	message = error("[sentry]\ndata_source_name={}\n".format(dsn))
	assert message.startswith("[sentry] data_source_name = 'http://***@") and "printable ASCII only" in message


def test_malformed_dsn_in_variable():
	message = error("[sentry]\n", {"SENTRY_DSN": "not a dsn"})
	assert message.startswith("environment variable SENTRY_DSN = 'not a dsn'")


def test_mask_dsn():
	assert mask_dsn("https://a:b@host/1") == "https://***@host/1"
	assert mask_dsn("https://host/1") == "https://host/1"


def test_defaults():
	s = settings("", {"SENTRY_DSN": DSN})
	assert s.environment == "production"
	assert s.release is None
	assert s.traces_sample_rate == 0.0
	assert s.sample_rate == 1.0
	assert s.server_name is None
	assert s.max_value_length == 8192
	assert s.include_local_variables is True
	assert s.shutdown_timeout == 10.0
	assert s.debug is False
	assert s.spotlight is None
	assert s.breadcrumbs_level == logging.INFO
	assert s.events_level == logging.ERROR


def test_environment_fallbacks():
	env = {"SENTRY_DSN": DSN}
	assert (
		settings("[sentry]\nenvironment=staging\n", dict(env, SENTRY_ENVIRONMENT="x", SITE_ID="y")).environment
		== "staging"
	)
	assert settings("", dict(env, SENTRY_ENVIRONMENT="x", SITE_ID="y")).environment == "x"
	assert settings("", dict(env, SITE_ID="y")).environment == "y"


def test_environment_inline_comment_from_the_docs():
	s = settings(
		"[sentry]\nenvironment=production_hogwarts  # will be visible as a tag 'environment'\n", {"SENTRY_DSN": DSN}
	)
	assert s.environment == "production_hogwarts"


def test_environment_invalid():
	assert "[sentry] environment" in error("[sentry]\nenvironment=a/b\n", {"SENTRY_DSN": DSN})


def test_release_option_and_variable():
	assert settings("[sentry]\nrelease=r1\n", {"SENTRY_DSN": DSN, "SENTRY_RELEASE": "r2"}).release == "r1"
	assert settings("", {"SENTRY_DSN": DSN, "SENTRY_RELEASE": "r2"}).release == "r2"


@pytest.mark.parametrize("option", ["traces_sample_rate", "sample_rate"])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "often", "nan"])
def test_invalid_rates(option, value):
	message = error("[sentry]\n{}={}\n".format(option, value), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry] {} = '{}'".format(option, value))
	assert "0 to 1" in message


@pytest.mark.parametrize("option", ["traces_sample_rate", "sample_rate"])
def test_valid_rates(option):
	assert getattr(settings("[sentry]\n{}=0.25\n".format(option), {"SENTRY_DSN": DSN}), option) == 0.25


@pytest.mark.parametrize("option", ["include_local_variables", "debug"])
def test_booleans(option):
	assert getattr(settings("[sentry]\n{}=no\n".format(option), {"SENTRY_DSN": DSN}), option) is False
	assert getattr(settings("[sentry]\n{}=ON\n".format(option), {"SENTRY_DSN": DSN}), option) is True
	message = error("[sentry]\n{}=perhaps\n".format(option), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry] {} = 'perhaps'".format(option)) and "boolean" in message


@pytest.mark.parametrize("value,seconds", [("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("3", 3.0), ("1.5s", 1.5)])
def test_shutdown_timeout(value, seconds):
	assert settings("[sentry]\nshutdown_timeout={}\n".format(value), {"SENTRY_DSN": DSN}).shutdown_timeout == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", "5 parsecs"])
def test_shutdown_timeout_invalid(value):
	message = error("[sentry]\nshutdown_timeout={}\n".format(value), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry] shutdown_timeout = '{}'".format(value)) and "duration" in message


def test_max_value_length():
	assert settings("[sentry]\nmax_value_length=300\n", {"SENTRY_DSN": DSN}).max_value_length == 300
	# Too small to keep event ids, trace ids and levels whole (Relay flags the event), or not ASCII digits.
	for value in ("0", "-3", "long", "12", "255", "\u0663", "1e3", "9" * 5000):
		assert error("[sentry]\nmax_value_length={}\n".format(value), {"SENTRY_DSN": DSN}).startswith(
			"[sentry] max_value_length = '{}".format(value[:20])
		)


def test_server_name():
	assert settings("[sentry]\nserver_name=box-7\n", {"SENTRY_DSN": DSN}).server_name == "box-7"


@pytest.mark.parametrize(
	"name,level",
	[("debug", 10), ("info", 20), ("NOTICE", 25), ("Warning", 30), ("error", 40), ("critical", 50), ("off", None)],
)
def test_logging_levels(name, level):
	s = settings("[sentry:logging]\nbreadcrumbs={0}\nevents={0}\n".format(name), {"SENTRY_DSN": DSN})
	assert s.breadcrumbs_level == level and s.events_level == level


def test_logging_levels_from_the_docs_with_inline_comments():
	s = settings(
		"[sentry:logging]\nbreadcrumbs=info  # logging level for capturing breadcrumbs\n"
		"events=notice  # logging level for capturing events\n",
		{"SENTRY_DSN": DSN},
	)
	assert s.breadcrumbs_level == 20 and s.events_level == 25


@pytest.mark.parametrize("option", ["breadcrumbs", "events"])
def test_unknown_level_lists_valid_names(option):
	message = error("[sentry:logging]\n{}=verbose\n".format(option), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry:logging] {} = 'verbose'".format(option))
	for name in ("debug", "info", "notice", "warning", "error", "critical"):
		assert name in message


def test_unknown_options_are_listed():
	s = settings("[sentry]\ndsn=x\n[sentry:logging]\nevent=error\n", {"SENTRY_DSN": DSN})
	assert s.unknown_options == ("[sentry] dsn", "[sentry:logging] event")


def test_unresolvable_variable_reference():
	config = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
	config.read_string("[sentry]\ndata_source_name=${nowhere:dsn}\n")
	with pytest.raises(SentryConfigError) as info:
		load_settings(config, {})
	assert str(info.value).startswith("[sentry] data_source_name is not set: cannot be read")


def test_settings_are_frozen():
	s = settings("", {"SENTRY_DSN": DSN})
	with pytest.raises(dataclasses.FrozenInstanceError):
		s.environment = "x"


@pytest.mark.parametrize("value", ["v1/2", "latest", ".", "r" * 201])
def test_invalid_release(value):
	message = error("[sentry]\nrelease={}\n".format(value), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry] release = '{}".format(value[:50]))
	assert "200 bytes" in message


def test_invalid_release_from_variable_names_the_variable():
	message = error("", {"SENTRY_DSN": DSN, "SENTRY_RELEASE": "a/b"})
	assert message.startswith("environment variable SENTRY_RELEASE = 'a/b'")


@pytest.mark.parametrize("value", ["None", "e" * 65])
def test_invalid_environment_values(value):
	assert error("[sentry]\nenvironment={}\n".format(value), {"SENTRY_DSN": DSN}).startswith("[sentry] environment")


def test_invalid_environment_from_site_id_names_the_variable():
	assert error("", {"SENTRY_DSN": DSN, "SITE_ID": "a/b"}).startswith("environment variable SITE_ID = 'a/b'")


# [sentry:web] and the options of issue 12


def test_web_defaults():
	s = settings("", {"SENTRY_DSN": DSN})
	assert s.web.enabled is True
	assert s.web.failed_status_codes == frozenset(range(500, 600))
	assert s.web.ignore_paths == ("/asab/v1/*",)
	assert s.web.trace_propagation_targets == ("loopback", "private", "single-label", "cluster-local")
	assert s.send_default_pii is False and s.task_spans is True


def test_web_options():
	s = settings(
		"[sentry:web]\nenabled=no\nfailed_status_codes=404, 500 - 502 ; comment\nignore_paths=/health /ready*\n"
		"trace_propagation_targets=private, *.corp.example, 10.1.0.0/16\n"
		"[sentry]\nsend_default_pii=yes\ntask_spans=off\n",
		{"SENTRY_DSN": DSN},
	)
	assert s.web.enabled is False
	assert s.web.failed_status_codes == frozenset({404, 500, 501, 502})
	assert s.web.ignore_paths == ("/asab/v1/*", "/health", "/ready*")
	assert s.web.trace_propagation_targets == ("private", "*.corp.example", "10.1.0.0/16")
	assert s.send_default_pii is True and s.task_spans is False
	assert s.unknown_options == ()


def test_propagation_off():
	s = settings("[sentry:web]\ntrace_propagation_targets=none\n", {"SENTRY_DSN": DSN})
	assert s.web.trace_propagation_targets == ()


@pytest.mark.parametrize(
	"ini, names",
	[
		("failed_status_codes=5xx", "[sentry:web] failed_status_codes = '5xx'"),
		("failed_status_codes=600", "[sentry:web] failed_status_codes = '600'"),
		("failed_status_codes=599-500", "[sentry:web] failed_status_codes = '599-500'"),
		("ignore_paths=health", "[sentry:web] ignore_paths = 'health'"),
		("trace_propagation_targets=https://x/", "[sentry:web] trace_propagation_targets = 'https://x/'"),
		("enabled=maybe", "[sentry:web] enabled = 'maybe'"),
	],
)
def test_web_invalid_values(ini, names):
	message = error("[sentry]\ndata_source_name={}\n[sentry:web]\n{}\n".format(DSN, ini))
	assert message.startswith(names), message


def test_unknown_web_option_is_reported():
	s = settings("[sentry:web]\nfailed_status=500\n", {"SENTRY_DSN": DSN})
	assert s.unknown_options == ("[sentry:web] failed_status",)


# Delivery options (issue 9)


def test_delivery_defaults():
	s = settings("", {"SENTRY_DSN": DSN})
	assert (s.queue_max_size, s.max_concurrent_requests, s.request_timeout) == (16 * 1024**2, 4, 10.0)
	assert (s.outbox, s.outbox_max_size, s.outbox_max_age) == (None, 100 * 1024**2, 7 * 86400.0)


def test_delivery_options():
	s = settings(
		"[sentry]\nqueue_max_size=512kB\nmax_concurrent_requests=8\nrequest_timeout=2s\n"
		"outbox=/var/lib/app/outbox\noutbox_max_size=1GB\noutbox_max_age=2d\n",
		{"SENTRY_DSN": DSN},
	)
	assert (s.queue_max_size, s.max_concurrent_requests, s.request_timeout) == (512 * 1024, 8, 2.0)
	assert (s.outbox, s.outbox_max_size, s.outbox_max_age) == ("/var/lib/app/outbox", 1024**3, 2 * 86400.0)
	assert s.unknown_options == ()


@pytest.mark.parametrize(
	"option, value, allowed",
	[
		("queue_max_size", "lots", "expected a size greater than 0 such as 16MB"),
		("queue_max_size", "0", "expected a size greater than 0"),
		("outbox_max_size", "-1MB", "expected a size greater than 0"),
		("max_concurrent_requests", "0", "whole number of at least 1"),
		("max_concurrent_requests", "100", "from 1 to 64"),
		("request_timeout", "0", "greater than 0"),
		("outbox_max_age", "forever", "expected a duration"),
	],
)
def test_delivery_options_invalid(option, value, allowed):
	message = error("[sentry]\n{}={}\n".format(option, value), {"SENTRY_DSN": DSN})
	assert message.startswith("[sentry] {} = '{}': ".format(option, value)) and allowed in message


def test_outbox_in_use_is_one_clear_line(tmp_path):
	import asab

	from asab_sentry.delivery.outbox import Outbox

	holder = Outbox(str(tmp_path), 10**6, 60)
	try:
		asab.Config.read_dict({"sentry": {"data_source_name": "http://k@127.0.0.1:9/1", "outbox": str(tmp_path)}})
		with pytest.raises(SentryConfigError) as info:
			import asab_sentry

			asab_sentry.SentryService(asab.Application(args=[]))
	finally:
		holder.close()
	assert str(info.value).startswith(
		"[sentry] outbox = '{}': the directory is in use by another process".format(tmp_path)
	)


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_unusable_ca_file_is_one_clear_line_at_start(tmp_path, monkeypatch, content, capsys):
	"""SSL_CERT_FILE that cannot be loaded: it killed every sender thread (a traceback each), nothing was sent."""
	import asab

	import asab_sentry
	from asab_sentry import cli

	path = tmp_path / "ca.pem"
	if content is not None:
		path.write_text(content)
	monkeypatch.setenv("SSL_CERT_FILE", str(path))
	asab.Config.read_dict({"sentry": {"data_source_name": "https://k@127.0.0.1:9/1", "outbox": str(tmp_path / "o")}})
	with pytest.raises(SentryConfigError) as info:
		asab_sentry.SentryService(asab.Application(args=[]))
	assert str(info.value).startswith("environment variable SSL_CERT_FILE = '{}': cannot be used: ".format(path))
	assert not (tmp_path / "o").exists()  # checked before the outbox is created and locked

	(tmp_path / "box").mkdir()
	(tmp_path / "box" / ".lock").write_text("")
	assert cli.main(["outbox", "flush", "--dsn", "https://k@127.0.0.1:9/1", str(tmp_path / "box")]) == 2
	assert "environment variable SSL_CERT_FILE = '{}': cannot be used: ".format(path) in capsys.readouterr().err


def test_malformed_proxy_is_one_clear_line_at_start_with_its_password_masked(monkeypatch):
	"""A proxy URL urllib3 cannot use failed in every sender thread; now start-up says so once, password masked."""
	import asab

	import asab_sentry

	monkeypatch.setenv("https_proxy", "bogus://user:hunter2@proxy.example:3128")
	monkeypatch.delenv("no_proxy", raising=False)
	monkeypatch.delenv("NO_PROXY", raising=False)
	asab.Config.read_dict({"sentry": {"data_source_name": "https://k@sentry.example/1"}})
	with pytest.raises(SentryConfigError) as info:
		asab_sentry.SentryService(asab.Application(args=[]))
	message = str(info.value)
	assert message.startswith(
		"environment variable https_proxy = 'bogus://user:***@proxy.example:3128': cannot be used"
	)
	assert "hunter2" not in message and "\n" not in message


def test_spotlight_url_with_credentials_is_refused_masked():
	# Spotlight takes no credentials; urllib took "user:s3cret@host" for the host, failed every request and
	# printed the password in the warning.
	message = error("[sentry]\nspotlight=http://user:s3cret@127.0.0.1:8969/stream\n")
	assert "[sentry] spotlight" in message and "s3cret" not in message and "user:password@" in message


def test_spotlight_scheme_in_any_case():
	assert settings("[sentry]\nspotlight=HTTP://127.0.0.1:9000/stream\n").spotlight == "HTTP://127.0.0.1:9000/stream"


@pytest.mark.parametrize("keys", ["ssn, a-", "ssn, __", "ssn, .:"])
def test_scrub_keys_with_fewer_than_two_letters_or_digits(keys):
	"""Terms are matched without separators: 'a-' filtered every key with an 'a' in it, '__' nothing."""
	message = error("[sentry]\nscrub_keys={}\n".format(keys), {"SENTRY_DSN": DSN})
	assert "[sentry] scrub_keys" in message and "at least two letters or digits" in message


def test_propagation_none_beside_other_targets_is_refused():
	"""'none, loopback' was taken as a glob for a host named "none" plus loopback: propagation was on."""
	message = error("[sentry]\n[sentry:web]\ntrace_propagation_targets=none, loopback\n", {"SENTRY_DSN": DSN})
	assert "[sentry:web] trace_propagation_targets" in message and "stands alone" in message
	assert (
		settings(
			"[sentry]\n[sentry:web]\ntrace_propagation_targets=none\n", {"SENTRY_DSN": DSN}
		).web.trace_propagation_targets
		== ()
	)
