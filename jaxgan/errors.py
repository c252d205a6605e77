"""Errors that the programs report as one line (no traceback): bad configuration or data."""


class JaxganError(Exception):
  """Base class: something the user can fix; the message says what and how."""


class ConfigError(JaxganError, ValueError):
  """A configuration value is unknown, missing or out of range."""


class DataError(JaxganError, ValueError):
  """The data source is missing, empty, not prepared, or too much of it is unreadable."""


class DivergedError(JaxganError):
  """Training produced a non-finite loss, gradient or parameter."""
