"""Tag validation as strict as Relay (reproduction D02): trailing newline in a key, whitespace-only values,
lone surrogates, huge numbers, hostile keys."""

import pytest

from asab_sentry.tags import InvalidTag, validate_tag


@pytest.mark.parametrize("key", ["key\n", "key\r", "k ey", "", "x" * 33, "é"])
def test_invalid_keys(key):
	with pytest.raises(InvalidTag):
		validate_tag(key, "v")


@pytest.mark.parametrize("value", ["   ", "\t", "\u00a0", "a\nb", "x" * 201, "huge"])
def test_invalid_values(value):
	if value == "huge":
		value = 10**5000  # (str() of it raises ValueError)
	with pytest.raises(InvalidTag) as info:
		validate_tag("k", value)
	assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_surrogates_in_a_value_are_replaced():
	assert validate_tag("user_agent", "curl\udcff") == ("user_agent", "curl\ufffd")


def test_numbers_and_str_subclasses():
	class Name(str):
		def __str__(self):
			raise RuntimeError("no")

		def __repr__(self):
			raise RuntimeError("no")

	assert validate_tag(Name("k"), Name("v")) == ("k", "v")
	assert validate_tag("n", 10**100) == ("n", str(10**100))
	assert validate_tag("f", 0.5) == ("f", "0.5") and validate_tag("b", True) == ("b", "True")
	with pytest.raises(InvalidTag) as info:
		validate_tag(Name("bad key"), "v")
	assert "broken repr" in str(info.value)
