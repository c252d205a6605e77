"""What the entry points share: flag parsing and jaxgan errors reported as one line, exit 2."""

import sys

from absl import app, flags


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing where a bad flag or --config.KEY=VALUE is one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l for l in str(e).splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):  # an error raised inside the config file
      lines = [lines[0].rstrip(":"), lines[-1]]
    _fail(" ".join(lines) + "; see --helpfull")
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a key that isn't there
    _fail(f"unknown config key {str(e).strip(chr(34))} in a --config.KEY=VALUE flag; the keys "
          "are those of the config file")


def run(main) -> None:
  """app.run(main) with one-line errors for flags and for `jaxgan.errors.JaxganError`."""

  def guarded(argv):
    from jaxgan.errors import JaxganError

    if len(argv) > 1:
      _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except JaxganError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=parse_flags)
