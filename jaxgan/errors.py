"""Errors that the programs report as one line (no traceback): bad configuration or data."""

import contextlib
from typing import Any, Iterable, Iterator, Mapping


class JaxganError(Exception):
  """Base class: something the user can fix; the message says what and how."""


class ConfigError(JaxganError, ValueError):
  """A configuration value is unknown, missing or out of range."""


class DataError(JaxganError, ValueError):
  """The data source is missing, empty, not prepared, or too much of it is unreadable."""


class DivergedError(JaxganError):
  """Training produced a non-finite loss, gradient or parameter."""


def check_positive_ints(config: Mapping[str, Any], keys: Iterable[str],
                        prefix: str = "config.") -> None:
  """Raises ConfigError naming the first of `keys` whose value is not an integer >= 1."""
  for key in keys:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f"{prefix}{key} must be a positive integer, got {value!r}")


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
  """Re-raises a ValueError of the block (e.g. `create_state` refusing a configured value)
  as a one-line ConfigError."""
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"config: {e}") from None
