"""
A strict parser of Sentry envelopes (and of legacy ``/store/`` bodies) for the collector.

Strict on purpose: a body whose item lengths do not match, whose headers or JSON payloads are not valid
UTF-8 JSON, or that exceeds the limits is rejected with `EnvelopeError` (the collector answers 400) —
never accepted half-way, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import typing

#: Item types whose payload is a JSON event.
EVENT_TYPES = frozenset({"event", "transaction", "feedback"})
JSON_TYPES = EVENT_TYPES | frozenset(
	{
		"session",
		"sessions",
		"client_report",
		"check_in",
		"user_report",
		"log",
		"otel_log",
		"span",
		"profile",
		"profile_chunk",
		"replay_event",
	}
)

MAX_HEADER_LINE = 64 * 1024
# JSON nesting deeper than this is refused (400): the viewer, the UI and the normalizer walk payloads recursively.
MAX_DEPTH = 512
MAX_ITEMS = 1000


class EnvelopeError(ValueError):
	"""The body is not a valid envelope; the message says why."""


@dataclasses.dataclass
class Item:
	headers: dict[str, typing.Any]
	payload: bytes
	json: typing.Any = None

	@property
	def type(self) -> str:
		return str(self.headers.get("type", ""))


@dataclasses.dataclass
class Envelope:
	headers: dict[str, typing.Any]
	items: list[Item]


def _json_line(line: bytes, what: str) -> dict:
	if len(line) > MAX_HEADER_LINE:
		raise EnvelopeError("{} is longer than {} bytes".format(what, MAX_HEADER_LINE))
	try:
		value = json.loads(line.decode("utf-8"))
	except UnicodeDecodeError:
		raise EnvelopeError("{} is not valid UTF-8".format(what))
	except ValueError as e:
		raise EnvelopeError("{} is not valid JSON: {}".format(what, e))
	except RecursionError:
		raise EnvelopeError("{} is nested too deeply".format(what))
	if not isinstance(value, dict):
		raise EnvelopeError("{} is not a JSON object".format(what))
	return value


def _json_payload(payload: bytes, what: str) -> typing.Any:
	try:
		value = json.loads(payload.decode("utf-8"))
	except UnicodeDecodeError:
		raise EnvelopeError("{} payload is not valid UTF-8".format(what))
	except ValueError as e:
		raise EnvelopeError("{} payload is not valid JSON: {}".format(what, e))
	except RecursionError:
		raise EnvelopeError("{} payload is nested too deeply".format(what))
	# Python 3.12+ parses far deeper JSON than the recursion limit lets any later (recursive) step walk: the
	# depth is checked here, on every version, and only when the payload has enough brackets to exceed it.
	if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
		raise EnvelopeError("{} payload is nested deeper than {} levels".format(what, MAX_DEPTH))
	return value


def _depth_exceeds(value: typing.Any, limit: int) -> bool:
	stack = [(value, 1)]
	while stack:
		node, depth = stack.pop()
		if depth > limit:
			return True
		if isinstance(node, dict):
			stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
		elif isinstance(node, list):
			stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
	return False


def parse_envelope(body: bytes) -> Envelope:
	"""
	Parse an envelope: a header line, then items, each a header line and a payload of ``length`` bytes
	(or up to the next newline when the header has no length).
	"""
	if not body.strip():
		raise EnvelopeError("the body is empty")
	end = body.find(b"\n")
	if end == -1:
		end = len(body)
	headers = _json_line(body[:end], "envelope header")
	position = end + 1
	items: list[Item] = []
	while position < len(body):
		end = body.find(b"\n", position)
		if end == -1:
			end = len(body)
		line = body[position:end]
		position = end + 1
		if not line.strip():
			continue  # tolerate trailing blank lines
		if len(items) >= MAX_ITEMS:
			raise EnvelopeError("more than {} items".format(MAX_ITEMS))
		item_headers = _json_line(line, "item header {}".format(len(items) + 1))
		length = item_headers.get("length")
		if length is not None:
			if not isinstance(length, int) or isinstance(length, bool) or length < 0:
				raise EnvelopeError("item {} has an invalid length {!r}".format(len(items) + 1, length))
			if position + length > len(body):
				raise EnvelopeError(
					"item {} claims {} bytes but only {} remain".format(
						len(items) + 1, length, max(len(body) - position, 0)
					)
				)
			payload = body[position : position + length]
			position += length
			if position < len(body):
				if body[position : position + 1] != b"\n":
					raise EnvelopeError("item {} is longer than its length {}".format(len(items) + 1, length))
				position += 1
		else:
			end = body.find(b"\n", position)
			if end == -1:
				end = len(body)
			payload = body[position:end]
			position = end + 1
		item = Item(headers=item_headers, payload=payload)
		if item.type == "":
			raise EnvelopeError("item {} has no type".format(len(items) + 1))
		if item.type in JSON_TYPES:
			item.json = _json_payload(payload, "{} item".format(item.type))
			if item.type in EVENT_TYPES and not isinstance(item.json, dict):
				raise EnvelopeError("{} item is not a JSON object".format(item.type))
		items.append(item)
	return Envelope(headers=headers, items=items)


def parse_store_body(body: bytes) -> Envelope:
	"""Wrap a legacy ``/store/`` body (one JSON event) as an envelope with one item."""
	event = _json_payload(body, "event")
	if not isinstance(event, dict):
		raise EnvelopeError("the event is not a JSON object")
	item_type = "transaction" if event.get("type") == "transaction" else "event"
	return Envelope(
		headers={"event_id": event.get("event_id")},
		items=[Item(headers={"type": item_type, "length": len(body)}, payload=body, json=event)],
	)
