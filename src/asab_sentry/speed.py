"""
The hot-path optimisations, and the one switch that turns them all off.

Each keeps the event content exactly as sentry-sdk alone would make it (``tests/test_performance.py`` sends
the same scenario both ways and compares every event; ``tests/test_serialize.py`` fuzz-compares the
serializer); ``docs/performance.md`` has the measurements.

- Log records at the breadcrumbs level are kept as `asab_sentry.breadcrumbs.LogBreadcrumb` and built, scrubbed
  and serialized once, when an event first carries them (`asab_sentry.breadcrumbs`).
- Events made of plain data are serialized by `asab_sentry.serialize` (sentry-sdk's serializer for the rest).
- Source lines of stack frames are cached per file while its modification time and size stay the same
  (`asab_sentry._sdk.use_source_cache`).
- sentry-sdk's internal logger does not build records for its debug messages unless ``debug`` is on
  (`asab_sentry._sdk.quiet_internal_logger`; not switched by `ENABLED`: it changes no event).
"""

#: Services created while this is true use the optimisations above. Only the event-equivalence test turns it
#: off, to compare with sentry-sdk's ordinary handling.
ENABLED = True
