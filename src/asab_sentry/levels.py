"""
Log levels: the records `[sentry:logging]` asks for reach the service's handler, and nothing else changes.

ASAB sets the root logger to ``NOTICE`` unless the application runs with ``-v`` or ``[logging] level`` says
otherwise, so an ``INFO`` record is never even created, and ``breadcrumbs=info`` (the default, and what the
documentation promises) would keep nothing below ``NOTICE``. `open_root` lowers the root logger to the level
the service needs and raises every handler that relied on the root's level (asab's console, file and syslog
handlers, which are at ``DEBUG`` themselves) to that former level: what they write stays exactly the same.
Loggers with a level of their own (``[logging] levels``) keep it. Handlers without a level of their own added
later (asab's ``ApiService.initialize_web()`` log handler, asab's metrics handler) get the former level too, while
the root stays opened. `restore` undoes what is still as it was set.
"""

from __future__ import annotations

import logging

# (handler, its level before, the level given to it)
_handlers: list[tuple[logging.Handler, int, int]] = []
# (root level before, root level set), or None when the root was left alone
_root: tuple[int, int] | None = None
# The handler type open_root leaves alone (the service's own)
_keep: type[logging.Handler] | None = None
_add_handler = logging.Logger.addHandler


def open_root(level: int | None, keep: type[logging.Handler] | None = None) -> bool:
	"""
	Let records at ``level`` (a `logging` level number; None: nothing to do) be created and reach the root
	logger's handlers of type ``keep`` (the service's own), when the root logger's level is higher. Every other
	handler of the root logger, and of loggers whose records reach the root through inherited levels, gets the
	root's former level if its own is lower. Returns whether anything changed. Undone by `restore`.
	"""
	global _root, _keep
	restore()
	root = logging.getLogger()
	before = root.level
	if level is None or before == logging.NOTSET or level >= before:
		return False
	for handler in _inheriting_handlers(root):
		if keep is not None and isinstance(handler, keep):
			continue
		if handler.level < before:
			_handlers.append((handler, handler.level, before))
			handler.setLevel(before)
	root.setLevel(level)
	_root = (before, level)
	_keep = keep
	if logging.Logger.addHandler is _add_handler:
		logging.Logger.addHandler = _adding_handler  # type: ignore[method-assign]
	return True


def _adding_handler(self: logging.Logger, hdlr: logging.Handler) -> None:
	"""``Logger.addHandler`` while the root is opened: a handler added later without a level of its own (it relies
	on the root's) gets the root's former level, like those there at `open_root`."""
	_add_handler(self, hdlr)
	try:
		opened = _root
		root = logging.getLogger()
		if (
			opened is None
			or root.level != opened[1]
			or hdlr.level != logging.NOTSET
			or (_keep is not None and isinstance(hdlr, _keep))
			or any(h is hdlr for h, _, _ in _handlers)
		):
			return
		current: logging.Logger | None = self
		while current is not None and current is not root:
			if current.level != logging.NOTSET:
				return  # a level of its own decides what reaches this handler
			current = current.parent
		_handlers.append((hdlr, hdlr.level, opened[0]))
		hdlr.setLevel(opened[0])
	except Exception:  # never fail the application's addHandler
		pass


def _inheriting_handlers(root: logging.Logger) -> list[logging.Handler]:
	"""The root's handlers and those of loggers that take their level from the root (no level of their own)."""
	handlers = list(root.handlers)
	for logger in list(logging.Logger.manager.loggerDict.values()):
		if not isinstance(logger, logging.Logger) or not logger.handlers:
			continue
		inherits = True
		current: logging.Logger | None = logger
		while current is not None and current is not root:
			if current.level != logging.NOTSET:
				inherits = False
				break
			current = current.parent
		if inherits:
			handlers.extend(h for h in logger.handlers if h not in handlers)
	return handlers


def restore() -> None:
	"""Give back the levels `open_root` changed, where nobody changed them since."""
	global _root, _keep
	if logging.Logger.addHandler is _adding_handler:
		logging.Logger.addHandler = _add_handler  # type: ignore[method-assign]
	_keep = None
	for handler, before, given in _handlers:
		if handler.level == given:
			handler.setLevel(before)
	_handlers.clear()
	if _root is not None:
		root = logging.getLogger()
		if root.level == _root[1]:
			root.setLevel(_root[0])
		_root = None
