"""Progress bars and metric curves for every loop of the library.

`progress` wraps a loop's iterable in a tqdm bar where a person watches (a
terminal, outside CI, on process 0) and is silent elsewhere. Loops report
scalars with `record` / `record_steps`, which write to the writer that
`writing_to(logdir)` made current (a contextvar), or do nothing when there is
none: library functions take no writer argument, and the caller picks where
their curves go. `MetricWriter` follows CLU's MetricWriter interface
(write_scalars, write_hparams, flush, close) and writes TensorBoard event
files and `metrics.jsonl` (one {"step", "name", "value"} object per line); it
is not CLU's because `clu.metric_writers` imports TensorFlow, so its events
go through the pure-Python writer of the `tensorboard` package instead.
Only process 0 writes (`sharding.is_primary`).
"""
import contextlib
import contextvars
import json
import os
import sys
import time
from typing import Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from mu_jax import sharding

JSONL = 'metrics.jsonl'
FLUSH_SECS = 10   # how stale a live `tensorboard --logdir` view of the events may be


def shows_progress() -> bool:
  """Whether bars are drawn: stderr is a terminal, CI is unset, and this is process 0."""
  return sys.stderr.isatty() and not os.environ.get('CI') and sharding.is_primary()


def progress(iterable: Iterable, *, desc: str, total: int | None = None,
             unit: str = 'step') -> Iterable:
  """`iterable` behind a transient tqdm bar, drawn only where `shows_progress`."""
  return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False,
              disable=not shows_progress())


class MetricWriter:
  """Scalars of one run as TensorBoard events and JSON lines in `logdir`.

  The files are created at the first write, so a run that records nothing
  (e.g. a model loaded from its cache) leaves no empty log behind.
  """

  def __init__(self, logdir: str):
    self.logdir = logdir
    self._events = None
    self._jsonl = None

  def _open(self):
    if self._events is None:
      # tensorboard is imported at the first write: importing the library stays fast.
      from tensorboard.summary.writer.event_file_writer import EventFileWriter
      self._events = EventFileWriter(self.logdir, flush_secs=FLUSH_SECS)
      self._jsonl = open(os.path.join(self.logdir, JSONL), 'a', buffering=1)
    return self._events, self._jsonl

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    events, jsonl = self._open()
    step, scalars = int(step), {name: float(value) for name, value in scalars.items()}
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=value)
                                         for name, value in scalars.items()])
    events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    for name, value in scalars.items():
      jsonl.write(json.dumps({'step': step, 'name': name, 'value': value}) + '\n')

  def write_hparams(self, hparams: Mapping[str, bool | int | float | str]) -> None:
    """The run's hyper-parameters, for TensorBoard's HParams dashboard."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
      info.hparams[name].CopyFrom(_hparam_value(value))
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=hparams_metadata.SESSION_START_INFO_TAG,
        metadata=hparams_metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_start_info=info)))])
    self._open()[0].add_event(event_pb2.Event(wall_time=time.time(), summary=summary))

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._jsonl.close()
      self._events = self._jsonl = None


def _hparam_value(value):
  """A protobuf Value of a bool, a number, or else a string: what the HParams dashboard shows."""
  from google.protobuf import struct_pb2
  if isinstance(value, bool):
    return struct_pb2.Value(bool_value=value)
  if isinstance(value, (int, float)):
    return struct_pb2.Value(number_value=value)
  return struct_pb2.Value(string_value=str(value))


_CURRENT: contextvars.ContextVar[MetricWriter | None] = contextvars.ContextVar(
    'mu_jax_metric_writer', default=None)


@contextlib.contextmanager
def writing_to(logdir: str) -> Iterator[MetricWriter | None]:
  """Makes a writer to `logdir` current inside the block; closes it at the end.

  On processes other than 0 no writer is made, so their `record` calls do nothing.
  """
  writer = MetricWriter(logdir) if sharding.is_primary() else None
  token = _CURRENT.set(writer)
  try:
    yield writer
  finally:
    _CURRENT.reset(token)
    if writer is not None:
      writer.close()


def record(step: int, scalars: Mapping[str, float], *, prefix: str = '') -> None:
  """Writes host scalars at `step` as 'prefix/name' to the current writer, if any."""
  writer = _CURRENT.get()
  if writer is not None:
    writer.write_scalars(step, {_tag(prefix, name): value for name, value in scalars.items()})


def record_steps(first_step: int, curves: Mapping[str, Sequence[float]], *,
                 prefix: str = '') -> None:
  """Records per-step values fetched together (e.g. once per epoch): item i at first_step + i."""
  for i, values in enumerate(zip(*curves.values())):
    record(first_step + i, dict(zip(curves, values)), prefix=prefix)


def _tag(prefix: str, name: str) -> str:
  return f'{prefix}/{name}' if prefix else name
