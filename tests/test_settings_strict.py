"""Configuration as strict as Relay: environment, release, max_value_length, shutdown_timeout, DSN masking,
scrub_keys, repaired environment variables."""

import configparser

import pytest

from asab_sentry import SentryConfigError
from asab_sentry.settings import load_settings, mask_dsn

DSN = "https://public123@o1.ingest.sentry.io/42"
KEY = "0123456789abcdef0123456789abcdef"


def load(options: dict, env: dict | None = None):
	config = configparser.ConfigParser(interpolation=None)
	config.read_dict({"sentry": dict({"data_source_name": DSN}, **options)})
	return load_settings(config, env or {})


def refused(options: dict, env: dict | None = None) -> str:
	with pytest.raises(SentryConfigError) as info:
		load(options, env)
	message = str(info.value)
	assert "\n" not in message and len(message) < 400, "one bounded line"
	return message


@pytest.mark.parametrize("value", ["prod\teu", "prod\x1b", "none", "NONE", "None", ".", "..", "a\\b", "a/b", "é" * 33])
def test_environment_relay_rejects_is_refused(value):
	assert refused({"environment": value}).startswith("[sentry] environment = ")


@pytest.mark.parametrize("value", ["Latest", "LATEST", "svc@1\x00", "a\\b", "a\tb", "..", "é" * 101])
def test_release_relay_rejects_is_refused(value):
	assert refused({"release": value}).startswith("[sentry] release = ")


@pytest.mark.parametrize("value", ["prod", "été", "pre prod", "x" * 64])
def test_environment_accepted(value):
	assert load({"environment": value}).environment == value


def test_release_whitespace_trimmed_like_relay():
	assert load({"release": "svc@1.0\u00a0"}).release == "svc@1.0"


@pytest.mark.parametrize("value", ["12", "\u0663", "255", "0x100"])
def test_max_value_length_too_small_or_not_digits(value):
	assert "at least 256" in refused({"max_value_length": value})


@pytest.mark.parametrize("value", ["99999999999999999999y", "9" * 400, "3601", "2h"])
def test_shutdown_timeout_that_overflows_is_refused(value):
	message = refused({"shutdown_timeout": value})
	assert message.startswith("[sentry] shutdown_timeout = ") and "at most 3600s" in message


def test_bad_value_is_shown_bounded():
	message = refused({"release": "x/" * 500_000})
	assert len(message) < 400 and message.startswith("[sentry] release = 'x/x/")


@pytest.mark.parametrize(
	"dsn",
	[
		"{}@o1.ingest.sentry.io/42",
		"https:/{}@o1.ingest.sentry.io/42",
		"https://ab/{}@o1.ingest.sentry.io/42",
		"https://{}:secret@o1.ingest.sentry.io",
	],
)
def test_malformed_dsn_key_is_masked_in_the_error(dsn):
	message = refused({"data_source_name": dsn.format(KEY)})
	assert KEY not in message and "secret" not in message and "***@o1.ingest.sentry.io" in message


def test_mask_dsn():
	assert mask_dsn("https://{}@o1.ingest.sentry.io/42".format(KEY)) == "https://***@o1.ingest.sentry.io/42"
	assert mask_dsn("https://o1.ingest.sentry.io/42") == "https://o1.ingest.sentry.io/42"


def test_repr_of_settings_masks_the_dsn_key():
	s = load({"data_source_name": "https://{}@o1.ingest.sentry.io/42".format(KEY)})
	assert KEY not in repr(s) and KEY not in str(s)
	assert "https://***@o1.ingest.sentry.io/42" in repr(s)
	assert s.dsn.startswith("https://" + KEY), "the value itself is intact"


def test_scrub_keys():
	assert load({"scrub_keys": "ssn, card_number  iban"}).scrub_keys == ("ssn", "card_number", "iban")
	assert load({}).scrub_keys == ()
	assert refused({"scrub_keys": "ok, bad key!"}).startswith("[sentry] scrub_keys = ")


def test_environment_variable_with_lone_surrogates_is_repaired_and_named():
	s = load({}, {"SENTRY_ENVIRONMENT": "prod-\udce9", "SENTRY_RELEASE": "svc@1"})
	assert s.environment == "prod-\ufffd"
	assert s.repaired_variables == ("SENTRY_ENVIRONMENT",)


@pytest.mark.parametrize("option", ["queue_max_size", "outbox_max_size"])
def test_size_that_overflows_is_refused(option):
	assert refused({option: "9" * 400 + "MB"}).startswith("[sentry] {} = ".format(option))
