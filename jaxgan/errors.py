"""Errors that the programs report as one line (no traceback): bad configuration or data."""

from typing import Any, Callable, Iterable, Mapping


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


def check_state_config(config: Any, make_state: Callable[[Any, Any], Any]) -> None:
  """Builds the state abstractly (no compute) so that a value `create_state` refuses is a
  ConfigError (one line) before any work starts."""
  import jax  # pylint: disable=import-outside-toplevel

  try:
    jax.eval_shape(lambda: make_state(config, jax.random.key(0)))
  except ValueError as e:
    raise ConfigError(f"config: {e}") from None
