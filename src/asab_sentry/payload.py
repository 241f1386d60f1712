"""
Reading Sentry event payloads (as sent, or as stored by the collector): message, title, tags, exceptions.
Shared by the testing kit, the collector, its viewer and the demo.
"""

from __future__ import annotations

import typing


def as_dict(value: typing.Any) -> dict:
	"""``value`` when it is a JSON object, else an empty dict (stored content may have any shape)."""
	return value if isinstance(value, dict) else {}


def as_list(value: typing.Any) -> list:
	"""The list of a protocol field sent either as a list or as ``{"values": [...]}``, else an empty list."""
	if isinstance(value, dict):
		value = value.get("values")
	return value if isinstance(value, list) else []


def tags(event: dict) -> dict[str, str]:
	"""The event's tags as a dict (Sentry sends an object or a list of pairs)."""
	value = event.get("tags")
	if isinstance(value, dict):
		return {str(k): str(v) for k, v in value.items()}
	if isinstance(value, list):
		return {str(p[0]): str(p[1]) for p in value if isinstance(p, (list, tuple)) and len(p) == 2}
	return {}


def exceptions(event: dict) -> list[dict[str, typing.Any]]:
	"""The exception chain, innermost cause first (Sentry's order); empty for messages."""
	value = event.get("exception")
	values = value.get("values") if isinstance(value, dict) else value
	return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def message(event: dict) -> str:
	"""The message: the formatted log message, or the text of capture_message."""
	logentry = event.get("logentry")
	if isinstance(logentry, dict) and (logentry.get("formatted") or logentry.get("message")):
		return str(logentry.get("formatted") or logentry.get("message"))
	value = event.get("message")
	if isinstance(value, dict):
		value = value.get("formatted") or value.get("message")
	return str(value or "")


def title(event: dict, item_type: str | None = None) -> str:
	"""A one-line title, as Sentry shows it: the transaction name, the last exception, or the message."""
	if (item_type or event.get("type")) == "transaction":
		return str(event.get("transaction") or "<unnamed transaction>")
	chain = exceptions(event)
	if chain and not is_synthetic(chain[-1], event):
		return "{}: {}".format(chain[-1].get("type", "Error"), chain[-1].get("value", "")).rstrip(": ")
	return message(event) or "<no message>"


def is_synthetic(exception: dict, event: dict) -> bool:
	"""
	Whether an exception only carries the stack of a message (the JavaScript SDK's ``captureMessage`` sends
	one without a type; Sentry marks others ``mechanism.synthetic``) and the event has a message.
	"""
	mechanism = exception.get("mechanism")
	synthetic = not exception.get("type") or (isinstance(mechanism, dict) and mechanism.get("synthetic") is True)
	return synthetic and bool(message(event))
