"""The one exception type this package raises at start-up."""

#: Longest rendering of a bad value in the message (the message stays one readable line).
MAX_VALUE_SHOWN = 120


class SentryConfigError(SystemExit):
	"""
	A `[sentry]` / `[sentry:logging]` option (or its environment variable) has a value that cannot be used.

	It derives from `SystemExit` on purpose: ASAB only logs ordinary exceptions raised while services
	initialize and then carries on, which would leave the service running with error tracking silently off.
	A configuration error must stop start-up instead, with exactly one line that names the option,
	the value (secrets masked) and what is allowed.

	Attributes:
		Section: the configuration section, e.g. ``"sentry"`` (``"environment"`` for an environment variable).
		Option: the option name, e.g. ``"traces_sample_rate"``, or the variable's name.
		Value: the offending value as shown to the user (secrets already masked).
	"""

	def __init__(self, section: str, option: str, value: object, allowed: str):
		self.Section = section
		self.Option = option
		self.Value = value
		self.Allowed = allowed
		# Options are named as in the configuration file; values from environment variables by the variable.
		name = (
			"environment variable {}".format(option) if section == "environment" else "[{}] {}".format(section, option)
		)
		if value is None:
			message = "{} is not set: {}".format(name, allowed)
		else:
			shown = repr(value)
			if len(shown) > MAX_VALUE_SHOWN:
				shown = shown[: MAX_VALUE_SHOWN - 4] + "...'"
			message = "{} = {}: {}".format(name, shown, allowed)
		super().__init__(message)

	def __str__(self) -> str:
		return str(self.args[0])
