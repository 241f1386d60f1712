"""Property-based tests (hypothesis): for any input, tag validation, configuration parsing, the text sanitizer
and the size limiter raise nothing unexpected, and what they let through is accepted by Relay's normalizer."""

import configparser
import json
import os
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_relay.processing import StoreNormalizer

from asab_sentry import SentryConfigError, limits, scrub, tags
from asab_sentry.settings import load_settings

NORMALIZER = StoreNormalizer(project_id=1)
# More examples for a thorough run: ASAB_SENTRY_PROPERTY_EXAMPLES=2000 pytest tests/test_properties.py
EXAMPLES = int(os.environ.get("ASAB_SENTRY_PROPERTY_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, lone surrogates included (hypothesis' text() leaves those out).
any_text = st.lists(st.integers(min_value=0, max_value=0x10FFFF), max_size=80).map(lambda cs: "".join(map(chr, cs)))
texts = st.one_of(st.text(max_size=80), any_text)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
json_data = st.recursive(
	json_leaf,
	lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(texts, children, max_size=6)),
	max_leaves=40,
)


def relay_errors(event: dict) -> list:
	"""Relay's verdict on the event as sent; a payload it cannot parse is an error too."""
	out = NORMALIZER.normalize_event(raw_event=limits.encode(event))
	return out.get("errors") or []


def base_event(**fields) -> dict:
	return dict({"event_id": "0" * 31 + "1", "platform": "python", "level": "error", "message": "m"}, **fields)


@PROPERTY
@given(
	key=st.one_of(texts, st.integers(), st.none()),
	value=st.one_of(texts, st.integers(), st.floats(), st.booleans(), st.none()),
)
def test_tag_validation(key, value):
	try:
		valid_key, valid_value = tags.validate_tag(key, value)
	except tags.InvalidTag as e:
		assert "\n" not in str(e) and len(str(e)) < 300
		return
	event = limits.FinalPass()(base_event(tags={valid_key: valid_value}))
	assert relay_errors(event) == []
	assert [list(pair) for pair in NORMALIZER.normalize_event(raw_event=limits.encode(event))["tags"]] == [
		[valid_key, valid_value.strip()] if valid_value.strip() != valid_value else [valid_key, valid_value]
	]


config_value = st.one_of(
	texts,
	st.from_regex(r"\A[0-9]{1,30}(\.[0-9]*)?(ms|s|m|h|d|w|M|y)?\Z"),
	st.from_regex(r"\A-?[0-9]{1,400}\s?([kKmMgG]i?[bB])?\Z"),
)


@PROPERTY
@given(
	options=st.dictionaries(
		st.sampled_from(
			[
				"environment",
				"release",
				"max_value_length",
				"shutdown_timeout",
				"traces_sample_rate",
				"sample_rate",
				"scrub_keys",
				"include_local_variables",
				"spotlight",
				"queue_max_size",
				"max_concurrent_requests",
				"request_timeout",
				"outbox_max_size",
				"outbox_max_age",
			]
		),
		config_value,
	),
	env=st.dictionaries(st.sampled_from(["SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "SITE_ID"]), texts),
)
def test_configuration_parsing(options, env):
	config = configparser.ConfigParser(interpolation=None)
	config.read_dict({"sentry": dict({"data_source_name": "https://k@localhost/1"}, **options)})
	try:
		s = load_settings(config, env)
	except SentryConfigError as e:
		assert "\n" not in str(e) and len(str(e)) < 400
		return
	assert s.max_value_length >= 256 and 0 <= s.shutdown_timeout <= 3600
	fields = {"environment": s.environment}
	if s.release is not None:
		fields["release"] = s.release
	assert relay_errors(limits.FinalPass()(base_event(**fields))) == []


@PROPERTY
@given(text=texts, data=json_data)
def test_text_sanitizer(text, data):
	clean = scrub.sanitize_text(text)
	clean.encode("utf-8")
	assert len(clean) <= len(text)
	json.dumps(scrub.sanitize(data), ensure_ascii=False).encode("utf-8")
	event = limits.FinalPass()(
		base_event(message=text, extra={"data": data}, tags={"t": "v"}, contexts={"c": {"k": data}})
	)
	assert relay_errors(event) == []


crumb = st.fixed_dictionaries(
	{"message": texts, "category": st.just("log"), "data": st.dictionaries(st.text(max_size=10), json_data, max_size=5)}
)
frame = st.fixed_dictionaries(
	{
		"function": st.text(min_size=1, max_size=20),
		"lineno": st.integers(1, 10**6),
		"vars": st.dictionaries(st.text(max_size=10), texts, max_size=5),
	}
)


@PROPERTY
@given(
	crumbs=st.lists(crumb, max_size=30),
	frames=st.lists(frame, max_size=30),
	extra=st.dictionaries(texts, json_data, max_size=8),
	padding=st.integers(0, 40_000),
	max_bytes=st.integers(3_000, 30_000),
)
def test_size_limiter(crumbs, frames, extra, padding, max_bytes):
	event = base_event(
		breadcrumbs={"values": crumbs},
		extra=dict(extra, padding="p" * padding),
		exception={
			"values": [{"type": "ValueError", "value": "v", "stacktrace": {"frames": frames or [{"function": "f"}]}}]
		},
		contexts={"trace": {"trace_id": "a" * 32, "span_id": "b" * 16}, "big": {"blob": "x" * padding}},
	)
	max_compressed = max_bytes // 3
	out = limits.FinalPass(max_bytes=max_bytes, max_compressed=max_compressed)(event)
	raw = limits.encode(out)
	assert len(raw) <= max_bytes
	assert len(zlib.compress(raw, 9)) <= max_compressed
	assert relay_errors(out) == []
	assert out["exception"]["values"][-1]["type"] == "ValueError"


@settings(max_examples=max(10, EXAMPLES // 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(
	message=texts,
	args=st.lists(json_leaf, max_size=3),
	struct_data=st.dictionaries(texts, json_data, max_size=15),
	tag=st.tuples(texts, texts),
	context=st.dictionaries(texts, json_data, max_size=5),
)
def test_whole_pipeline_any_input_gives_valid_events(message, args, struct_data, tag, context):
	"""The real pipeline (a SentryService, sentry-sdk, the final pass): whatever the application logs or sets,
	nothing raises into it and every event Relay sees is valid."""
	import logging

	from asab_sentry import testing

	with testing.capture_sentry({"sentry:logging": {"breadcrumbs": "warning"}}) as capture:
		svc = capture.application().get_service("asab.SentryService")
		logger = logging.getLogger("tests.properties")
		handler = svc.LogHandler
		record = logger.makeRecord(logger.name, logging.WARNING, "x.py", 1, message, tuple(args), None)
		record._struct_data = struct_data
		handler.handle(record)  # straight to the Sentry handler (other handlers may not format odd records)
		svc.set_tag(*tag)
		svc.set_context("ctx", context)
		record = logger.makeRecord(logger.name, logging.ERROR, "x.py", 2, message, tuple(args), None)
		record._struct_data = struct_data
		handler.handle(record)
		svc.capture_message(message, tags={tag[0]: tag[1]}, contexts={"c": context})
		assert len(capture.events) == 2
		for envelope in capture.envelopes:
			for item in envelope.items:
				if item.type == "event":
					out = NORMALIZER.normalize_event(raw_event=item.payload.get_bytes())
					assert not out.get("errors"), out.get("errors")
