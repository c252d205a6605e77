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


def first_line(error: BaseException, limit: int | None = None) -> str:
  """`Type: first line` of `error`, for a one-line message about an error we recover from or wrap.

  tensorstore appends its JSON spec to the line (several kB); that is dropped. With `limit`
  the line is cut to that many characters. An error without a message gives its type alone.
  """
  lines = str(error).strip().splitlines()
  text = lines[0].split(" [tensorstore_spec", 1)[0] if lines else ""
  if limit is not None and len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_positive_ints(config: Mapping[str, Any], keys: Iterable[str],
                        prefix: str = "config.") -> None:
  """Raises ConfigError naming the first of `keys` whose value is not an integer >= 1."""
  for key in keys:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f"{prefix}{key} must be a positive integer, got {value!r}")


def check_choice(config: Mapping[str, Any], key: str, choices: Iterable[str], default: Any,
                 prefix: str = "config.") -> Any:
  """config[key] (`default` where the config lacks it, as in runs saved before the key);
  ConfigError naming the key and the choices when it is not one of `choices`."""
  value, choices = config.get(key, default), tuple(choices)
  if value not in choices:
    raise ConfigError(f"{prefix}{key}={value!r} is unknown; choose one of {', '.join(choices)}")
  return value


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
