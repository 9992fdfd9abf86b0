"""Name -> factory registries, so configs choose everything with strings."""
from typing import Callable, Generic, Iterator, TypeVar

from mu_jax.errors import MuJaxError

T = TypeVar('T')


class Registry(Generic[T]):
  """A named table of factories; an unknown name lists the valid ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(entry: T) -> T:
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._entries[name] = entry
      return entry
    return decorator

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise MuJaxError(
          f'Unknown {self.kind} {name!r}; valid names are: '
          f'{", ".join(sorted(self._entries))}.')
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
