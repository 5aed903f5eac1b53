"""The data packages' error type, in a module of its own so that every other module can import it
(`lra.core` re-exports it)."""


class DataError(Exception):
  """A user-facing data problem: missing or malformed files, bad options, unknown task names."""


class MissingDataError(DataError):
  """A task's files are not where it looks (the message names them and how to get them)."""
