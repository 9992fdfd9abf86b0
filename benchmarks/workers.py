"""Worker processes for the side-by-side benchmarks: each side runs in a spawned process
of its own (nothing loaded, its own threads) and answers timed calls over a pipe."""
import multiprocessing
import os


def answer(conn, worker, hello) -> None:
  """Sends `hello`, then answers (method, kwargs) requests with `worker`'s methods until
  it receives None."""
  conn.send(hello)
  while (request := conn.recv()) is not None:
    method, kwargs = request
    conn.send(getattr(worker, method)(**kwargs))


class Process:
  """A worker process (spawned, so it starts with nothing loaded) and its pipe."""

  def __init__(self, target, *args):
    context = multiprocessing.get_context('spawn')
    self.conn, child = context.Pipe()
    self.process = context.Process(target=target, args=(child, *args), daemon=True)
    self.process.start()
    self.hello = self.conn.recv()

  def __call__(self, method: str, **kwargs) -> dict:
    self.conn.send((method, kwargs))
    out = self.conn.recv()
    return {**out, 'load': os.getloadavg()[0]} if isinstance(out, dict) else out

  def close(self) -> None:
    self.conn.send(None)
    self.process.join()
