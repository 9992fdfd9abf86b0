"""The one exception type that user-facing entry points turn into a clean exit."""


class MuJaxError(Exception):
  """A problem with the user's input or environment, stated in one sentence.

  Experiments catch it, print the message alone and exit non-zero; anything
  else is a bug and keeps its traceback.
  """


class NonFiniteError(MuJaxError):
  """Training or unlearning produced a NaN or infinite loss or parameter."""
