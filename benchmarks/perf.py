r"""Speed and scale of mu_jax, measured side by side in one run on one machine.

  python benchmarks/perf.py                                   # every section
  python benchmarks/perf.py --sections=peak,flops,jit,fisher  # a quick subset

Sections (numbered as in issue 4):
  peak     the machine's float32 matmul peak (the best of 2048^2 and 4096^2 matmuls)
  jit      (1) jit vs eager: the SSD importance pass and the training step
  fisher   (2) per-example (empirical) vs batch Fisher: cost of one pass
  flops    (3) training step, full training epoch and SSD importance pass:
           images/s, achieved FLOP/s and share of the matmul peak; the
           straightforward Flax CNN (`cnn.ReferenceCNN`) measured beside mu_jax's
  scaling  (4) importance pass and training over 1, 2, 4, 8 devices, with the
           largest difference to 1 device (fake CPU devices share the same
           cores: this checks correctness; speed-ups need real devices)
  memory   (5) peak memory and seconds of each method on the Fashion-MNIST CNN, the
           ResNet-18 config and the default LM (the small transformer on a
           forget05-sized request, with the LM benchmark's hyper-parameters, and
           one epoch of DP2Unlearning's DP-SGD training):
           growth of the process's peak RSS during a second, compiled run, so
           compilation is excluded; host RAM on a CPU
  acu      (6) one ACU forget request (Woodbury downdate) vs refitting the
           ridge head on D_r from scratch, buffer widths 1024-8192

Data are synthetic with the real shapes (28x28x1 and 32x32x3 images, 10
classes): speed does not depend on pixel values. Recipes (batch size,
optimizer) come from configs/fashion_mnist_cnn.py and configs/cifar10_resnet18.py.
Times are the fastest of --repeats runs, as other load only ever adds time;
the load average printed before and after says whether other jobs shared the
machine. "Model FLOPs" count the matmuls and convolutions of the traced
computation (forward and backward); XLA's own count, which adds elementwise
work, is printed beside it.
"""
import gc
import json
import os
import platform
import subprocess
import sys
import time

# LAPACK calls (the Cholesky of each Woodbury step) run in OpenBLAS, whose
# spinning worker threads made a 500x500 Cholesky ~100x slower (480 ms against
# 3.4 ms) while other jobs shared this machine's two cores; one thread is robust.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
# Fake CPU devices meet in every all-reduce; on an oversubscribed machine one
# device's thread arrived after XLA's default 40 s, which aborts the process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_cpu_collective_call_terminate_timeout_seconds=900').strip()

import jax  # noqa: E402
import jax.extend.core  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from jax.scipy.linalg import cho_factor, cho_solve  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mu_jax import sharding  # noqa: E402
from mu_jax.experiments import config_lib, runs  # noqa: E402
from mu_jax.analytic import ridge  # noqa: E402
from mu_jax.data import Examples, concat  # noqa: E402
from mu_jax.data.batching import epoch_batches  # noqa: E402
from mu_jax.experiments.lm.config import private_recipe  # noqa: E402
from mu_jax.influence import fisher  # noqa: E402
from mu_jax.tasks import Classification, LanguageModel  # noqa: E402
from mu_jax.methods import (  # noqa: E402
    LM_METHODS, METHODS, Context, create_method, method_defaults, run_method)
from mu_jax.methods import acu  # noqa: E402
from mu_jax.models import Network, as_model, cnn, create_model, split_variables  # noqa: E402
from mu_jax.train import (  # noqa: E402
    make_train_step, optimizer_from_config, sharded_training, train_model, zero_stats)

SECTIONS = ('peak', 'jit', 'fisher', 'flops', 'scaling', 'memory', 'acu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SECTIONS = flags.DEFINE_list('sections', list(SECTIONS), f'Any of {", ".join(SECTIONS)}.')
_DEVICES = flags.DEFINE_integer(
    'devices', 8, 'Fake CPU devices to create (the scaling section uses up to this many); '
    '0 leaves the platform alone.')
_ROWS = flags.DEFINE_integer('rows', 6400, 'Synthetic rows per timed pass or epoch.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per figure; the fastest is kept.')
_FISHER_ROWS = flags.DEFINE_integer('fisher_rows', 1280, 'Rows per pass in the fisher section.')
_SSD_BATCH = flags.DEFINE_integer('ssd_batch', 64, 'Importance-pass batch size (SSD default).')
_MEMORY_MODELS = flags.DEFINE_list('memory_models', ['cnn', 'resnet18', 'transformer'],
                                   'Models for memory.')
_MEMORY_METHODS = flags.DEFINE_list('memory_methods', [], 'Methods for memory; default all.')
_ENSEMBLE_MODELS = flags.DEFINE_integer(
    'memory_ensemble_models', 2, 'Ensemble size of dmm, dm_direct and oracle_matching in '
    'the memory section (their defaults train 10-256 models; on a CPU, 2 on the CNN, and '
    'none on ResNet-18).')
ENSEMBLE_METHODS = ('dmm', 'dm_direct', 'oracle_matching')
_MEMORY_OUT = flags.DEFINE_string('memory_out', None, "Write the memory section's rows, "
                                  'machine and command to this JSON file.')
_MEMORY_PAGE = flags.DEFINE_string('memory_page', None, 'Render that JSON as a Markdown page '
                                   'here (e.g. docs/memory.md).')
_ACU_WIDTHS = flags.DEFINE_list('acu_widths', ['1024', '2048', '4096', '8192'], 'Buffer widths.')
_ACU_ROWS = flags.DEFINE_integer('acu_rows', 55_000, 'Rows of D (Fashion-MNIST: 55,000).')
_ACU_FORGET = flags.DEFINE_list('acu_forget', ['100', '500'], 'Rows in one forget request.')
_ACU_FEATURES = flags.DEFINE_integer('acu_features', 128, 'Penultimate width (the CNN: 128).')


# ----------------------------------------------------------------------------- helpers

def machine() -> str:
  cpu = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    names = [l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')]
    cpu = names[0] if names else cpu
  device = jax.devices()[0]
  return (f'{cpu}, {os.cpu_count()} cores; JAX {jax.__version__}, {device.platform} '
          f'({device.device_kind}), {jax.device_count()} devices')


def load() -> str:
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def best_time(fn, repeats: int | None = None) -> float:
  """Fastest wall time of fn() (blocked on), after one untimed warm-up call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats or _REPEATS.value):
    began = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - began)
  return min(times)


def synthetic(n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0) -> Examples:
  rng = np.random.default_rng(seed)
  return Examples(x=rng.normal(size=(n, *shape)).astype(np.float32), y=rng.integers(0, classes, n).astype(np.int32))


def recipe(name: str):
  return config_lib.load_config_file(os.path.join(ROOT, 'configs', f'{name}.py'))


def fashion_models() -> dict:
  return {'mu_jax cnn': create_model('cnn', 10),
          'reference (nn.Conv, nn.max_pool)': as_model(
              'cnn_reference', Network(cnn.ReferenceCNN(), 10))}


def _conv_flops(eqn) -> float:
  lhs_spec, rhs_spec, _ = eqn.params['dimension_numbers']
  rhs = eqn.invars[1].aval.shape
  window = np.prod([rhs[d] for d in rhs_spec[2:]])
  return 2.0 * np.prod(eqn.outvars[0].aval.shape) * window * rhs[rhs_spec[1]]


def _dot_flops(eqn) -> float:
  (contract, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  return 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif eqn.primitive.name == 'dot_general':
      total += _dot_flops(eqn)
    times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
    if eqn.primitive.name == 'shard_map':
      times = eqn.params['mesh'].size
    for sub in _subjaxprs(eqn):
      total += times * _jaxpr_flops(sub)
  return total


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def model_flops(fn, *args) -> float:
  """FLOPs of the matmuls and convolutions `fn` traces to (scans multiplied out)."""
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(jitted, *args, **kwargs) -> float:
  cost = jitted.lower(*args, **kwargs).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost).get('flops', float('nan')))


def table(header: tuple[str, ...], rows: list[tuple]) -> None:
  cells = [tuple(str(c) for c in header)] + [tuple(_fmt(c) for c in r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  for k, r in enumerate(cells):
    print('  ' + '  '.join(c.rjust(w) if k and i else c.ljust(w)
                           for i, (c, w) in enumerate(zip(r, widths))))
  print(flush=True)


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:.3g}' if abs(value) < 100 else f'{value:,.0f}'
  return str(value)


def section(title: str) -> None:
  print(f'== {title}  [load {load()}]', flush=True)


# ----------------------------------------------------------------------------- shared passes

class Pass:
  """One model's training step or importance pass on synthetic data, timed."""

  def __init__(self, model, mesh, rows: int):
    self.model, self.mesh = model, mesh
    cfg = recipe('fashion_mnist_cnn').train
    self.batch = cfg.batch_size
    data = synthetic(rows, (28, 28, 1))
    self.data = data
    self.task = Classification(model, (28, 28, 1), 10)
    self.batches = [sharding.shard_batch(b, mesh)
                    for b in epoch_batches(data.arrays(), self.batch)]
    self.state, self.step = sharded_training(self.task, cfg, len(self.batches), seed=0,
                                             mesh=mesh)
    self.variables = sharding.replicate(self.task.init(jax.random.key(0)), mesh)
    self.ctx = Context(self.task, data.take(slice(0, 0)), data, mesh, 0)
    self.tx = optimizer_from_config(cfg, len(self.batches))

  def train_epoch(self):
    totals = zero_stats(self.mesh)
    for b in self.batches:
      self.state, totals, _ = sharding.pace(self.step(self.state, totals, b), self.mesh)
    return totals

  def importance(self, kind='batch', batch_size=None):
    return fisher.importance(kind, self.ctx.task, self.variables, self.ctx, 'retain',
                             batch_size or _SSD_BATCH.value)

  def step_flops(self) -> tuple[float, float]:
    """(model FLOPs, XLA FLOPs) of one training step, per image."""
    step = make_train_step(self.task, self.tx)
    batch = self.batches[0]
    return (model_flops(step, self.state, batch) / self.batch,
            xla_flops(jax.jit(step), self.state, batch) / self.batch)

  def importance_flops(self, kind='batch') -> tuple[float, float]:
    params, model_state = split_variables(self.variables)
    bs = _SSD_BATCH.value
    batch = sharding.shard_batch(next(epoch_batches(self.data.arrays(), bs)), self.mesh)
    zeros = sharding.replicate(jax.tree.map(np.zeros_like, params), self.mesh)
    count = sharding.replicate(np.zeros((), np.float32), self.mesh)
    kw = dict(kind=kind, task=self.ctx.task, mesh=self.mesh, chunk=fisher.chunk_rows(
        params, bs, fisher.MEMORY_BUDGET) if kind == 'per_example' else 1)
    fn = lambda *a: fisher._accumulate(*a, **kw)
    args = (zeros, count, params, model_state, batch)
    return model_flops(fn, *args) / bs, xla_flops(fisher._accumulate, *args, **kw) / bs


# ----------------------------------------------------------------------------- sections

def matmul_gflops(n: int, repeats: int) -> float:
  """Best float32 GFLOP/s of an n x n @ n x n matmul."""
  a, b = (jax.device_put(np.random.default_rng(i).normal(size=(n, n)).astype(np.float32))
          for i in (0, 1))
  mm = jax.jit(jnp.matmul)
  return 2 * n**3 / best_time(lambda: mm(a, b), repeats) / 1e9


def cnn_gemms(batch: int) -> list[tuple[str, int, int, int]]:
  """(name, M, K, N) of every matmul in one training step of the Fashion-MNIST
  CNN, convolutions written as im2col GEMMs: forward, weight gradient and
  (except for the first layer, whose input needs none) input gradient."""
  layers = (('conv1', batch * 28 * 28, 9, 32), ('conv2', batch * 14 * 14, 288, 64),
            ('fc1', batch, 3136, 128), ('fc2', batch, 128, 10))
  out = []
  for name, m, k, n in layers:
    out += [(f'{name} forward', m, k, n), (f'{name} weight grad', k, m, n)]
    if name != 'conv1':
      out.append((f'{name} input grad', m, n, k))
  return out


def gemm_bound(batch: int, peak: float) -> None:
  """Times the CNN step's GEMMs alone, as plain matmuls of the same shapes: the
  step's speed if nothing but its arithmetic cost time."""
  mm = jax.jit(jnp.matmul)
  rows, total_s, total_flops = [], 0.0, 0.0
  for name, m, k, n in cnn_gemms(batch):
    a, b = (jax.device_put(np.random.default_rng(i).normal(size=shape).astype(np.float32))
            for i, shape in enumerate(((m, k), (k, n))))
    seconds = best_time(lambda: mm(a, b), max(_REPEATS.value, 5))
    flops = 2 * m * k * n
    total_s, total_flops = total_s + seconds, total_flops + flops
    rows.append((name, f'[{m}, {k}] @ [{k}, {n}]', flops / seconds / 1e9,
                 f'{100 * flops / seconds / 1e9 / peak:.1f}%'))
  table(('GEMM of a training step', 'shape', 'GFLOP/s', 'of peak'), rows)
  print(f'  all GEMMs of one step of {batch}: {1e3 * total_s:.1f} ms, '
        f'{total_flops / total_s / 1e9:.0f} GFLOP/s = {100 * total_flops / total_s / 1e9 / peak:.1f}% '
        f'of peak; a step doing only these would train {batch / total_s:,.0f} images/s\n',
        flush=True)


def run_peak() -> float:
  section('peak: float32 matmul')
  rows = [(f'{n}x{n} @ {n}x{n}', matmul_gflops(n, max(_REPEATS.value, 5))) for n in (2048, 4096)]
  table(('matmul', 'GFLOP/s'), rows)
  best = max(g for _, g in rows)
  print(f'  peak: {best:.1f} GFLOP/s\n')
  return best


def run_flops(peak: float | None) -> None:
  section('(3) training and importance pass: images/s and FLOP/s, batch 128 / 64')
  mesh = sharding.make_mesh('data:1')
  passes = {name: Pass(m, mesh, _ROWS.value) for name, m in fashion_models().items()}
  rows = _ROWS.value
  times = {name: {'train': [], 'importance': []} for name in passes}
  for p in passes.values():   # compile and warm up
    jax.block_until_ready((p.train_epoch(), p.importance()))
  for _ in range(_REPEATS.value):   # interleaved, so all see the same load
    if peak:   # the peak again beside the passes: the best of all counts
      peak = max(peak, matmul_gflops(2048, 2))
    for name, p in passes.items():
      for what, fn in (('train', p.train_epoch), ('importance', p.importance)):
        began = time.perf_counter()
        jax.block_until_ready(fn())
        times[name][what].append(time.perf_counter() - began)
  out = []
  for name, p in passes.items():
    for what, (flops, xla) in (('train step', p.step_flops()),
                               ('importance (SSD batch)', p.importance_flops())):
      seconds = min(times[name]['train' if what == 'train step' else 'importance'])
      ips = rows / seconds
      share = f'{100 * flops * ips / 1e9 / peak:.1f}%' if peak else '—'
      out.append((what, name, ips, flops / 1e6, xla / 1e6, flops * ips / 1e9, share))
  table(('pass', 'model', 'images/s', 'model MFLOP/img', 'XLA MFLOP/img', 'GFLOP/s',
         'of peak'), out)
  if peak:
    print(f'  matmul peak, best of the peak section and of runs between the passes: '
          f'{peak:.1f} GFLOP/s')
  for what in ('train', 'importance'):
    fast, ref = (min(times[n][what]) for n in passes)
    print(f'  {what}: mu_jax cnn is {ref / fast:.2f}x the reference')
  if peak:
    print()
    gemm_bound(recipe('fashion_mnist_cnn').train.batch_size, peak)
  # The whole loop of train_model (host batching, transfers, statistics), one
  # epoch: time(2 epochs) - time(1 epoch) leaves out compilation.
  cfg = recipe('fashion_mnist_cnn').train
  model, data = create_model('cnn', 10), synthetic(rows, (28, 28, 1))
  epoch_time = []
  for _ in range(_REPEATS.value):
    spent = []
    for epochs in (1, 2):
      began = time.perf_counter()
      train_model(Classification(model, (28, 28, 1), 10), _with_epochs(cfg, epochs), data,
                  seed=0, mesh=mesh)
      spent.append(time.perf_counter() - began)
    epoch_time.append(spent[1] - spent[0])
  print(f'  train_model, one epoch of {rows} rows (batching and transfers included): '
        f'{rows / min(epoch_time):,.0f} images/s\n', flush=True)


def _with_epochs(cfg, epochs: int):
  out = cfg.copy_and_resolve_references()
  out.unlock()
  out.epochs = epochs
  return out


def run_jit() -> None:
  section('(1) jit vs eager (jax.disable_jit), Fashion-MNIST CNN')
  mesh = sharding.make_mesh('data:1')
  eager_rows = 2 * _SSD_BATCH.value
  jitted = Pass(create_model('cnn', 10), mesh, _ROWS.value)
  small = Pass(create_model('cnn', 10), mesh, eager_rows)
  imp_jit = _ROWS.value / best_time(jitted.importance)
  with jax.disable_jit():
    imp_eager = eager_rows / best_time(small.importance, 1)
  train_jit = _ROWS.value / best_time(jitted.train_epoch)
  step = make_train_step(small.task, small.tx)
  state = small.state

  def eager_steps():
    nonlocal state
    for b in small.batches[:2]:
      state, stats = step(state, b)
    return stats

  with jax.disable_jit():
    train_eager = 2 * small.batch / best_time(eager_steps, 1)
  table(('pass', 'jit images/s', 'eager images/s', 'jit / eager'),
        [('SSD importance pass (batch 64)', imp_jit, imp_eager, imp_jit / imp_eager),
         ('training (batch 128)', train_jit, train_eager, train_jit / train_eager)])
  print(f'  jit: whole passes over {_ROWS.value} rows; eager: {eager_rows} rows of the\n'
        '  importance pass and 2 training steps, the same code under jax.disable_jit()\n'
        '  (where shard_map runs every primitive as its own dispatch).\n')


def run_fisher() -> None:
  section('(2) per-example vs batch Fisher, Fashion-MNIST CNN, batch 64')
  rows_n = _FISHER_ROWS.value
  p = Pass(create_model('cnn', 10), sharding.make_mesh('data:1'), rows_n)
  params = p.variables['params']
  chunk = fisher.chunk_rows(params, _SSD_BATCH.value, fisher.MEMORY_BUDGET)
  runs = (('batch', 'batch', False),
          (f'per_example, vmap over {chunk} rows (memory budget)', 'per_example', False),
          ('per_example, one row at a time (default on CPU)', 'per_example', True),
          ('label_free', 'label_free', False))
  rows, base = [], None
  for label, kind, rowwise in runs:
    seconds = best_time(lambda: fisher.importance(kind, p.ctx.task, p.variables, p.ctx, 'retain',
                                                  _SSD_BATCH.value, rowwise=rowwise))
    base = base or seconds
    rows.append((label, rows_n / seconds, p.importance_flops(kind)[0] / 1e6, seconds / base))
  table(('estimator', 'images/s', 'model MFLOP/img', 'cost / batch'), rows)
  print('  XLA:CPU lowers vmapped per-example convolution gradients to grouped\n'
        '  convolutions, which it runs far below its matmul speed.\n')


def _delegate(name: str, **env) -> bool:
  """Runs section `name` in a fresh child process (True), unless this is that child."""
  if os.environ.get('MU_JAX_PERF_CHILD') == name:
    return False
  args = [a for a in sys.argv[1:] if not a.startswith('--sections')]
  done = subprocess.run([sys.executable, os.path.abspath(__file__), f'--sections={name}', *args],
                        env=dict(os.environ, MU_JAX_PERF_CHILD=name, **env))
  if done.returncode:
    print(f'  section {name} failed (exit status {done.returncode}); see its output above\n')
  return True


def run_scaling() -> None:
  # Its own process: XLA:CPU's in-process all-reduce between fake devices
  # stalled twice here under load (and aborts after the timeout set above);
  # that must not take the other sections with it.
  if _delegate('scaling'):
    return
  counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
  section(f'(4) scaling over {counts} {jax.devices()[0].platform} devices, CNN')
  rows, reference = [], {}
  for n in counts:
    p = Pass(create_model('cnn', 10), sharding.make_mesh(f'data:{n}'), _ROWS.value)
    importance = sharding.to_host(p.importance())
    imp_s = best_time(p.importance)
    totals = zero_stats(p.mesh)
    for b in p.batches[:5]:   # from the same initial state as on 1 device
      p.state, totals, _ = p.step(p.state, totals, b)
    params = sharding.to_host(p.state.params)
    train_s = best_time(p.train_epoch)
    reference.setdefault('imp', importance)
    reference.setdefault('params', params)
    rows.append((n, _ROWS.value / imp_s, _ROWS.value / train_s,
                 _max_rel(importance, reference['imp']), _max_rel(params, reference['params'])))
    print(f'    {rows[-1]}', flush=True)
  table(('devices', 'importance images/s', 'training images/s', 'max rel. diff importance',
         'max rel. diff params after 5 steps'), rows)
  print('  (Over a whole epoch of Adam on these random labels, summation-order differences\n'
        '  grow to ~1e-3 absolute: chaotic, not a sharding error.)\n')


def _max_rel(a, b) -> float:
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30)),
                       a, b)
  return max(jax.tree.leaves(diffs))


def _rss_mib(field: str) -> float:
  for line in open('/proc/self/status'):
    if line.startswith(field + ':'):
      return int(line.split()[1]) / 1024
  return float('nan')


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')


def run_memory() -> None:
  if not os.path.exists('/proc/self/clear_refs'):
    print('  (5) memory needs Linux /proc/self/clear_refs to reset the peak RSS; skipped\n')
    return
  # Buffers over 64 KiB get their own mappings, returned to the system when
  # freed, so that the resident set follows live memory; this slows
  # allocation, so it runs in a child process of its own.
  if _delegate('memory', MALLOC_MMAP_THRESHOLD_=str(2**16)):
    return
  section('(5) peak memory of each method (peak RSS growth of a compiled run, MiB) and the '
          'seconds of that run (one epoch)')
  rows = []
  for model_name in _MEMORY_MODELS.value:
    config, task, ctx = memory_request(model_name)
    variables = task.init(jax.random.key(0))
    size = sum(p.size * 4 for p in jax.tree.leaves(variables)) / 2**20
    print(f'  {model_name}: {size:.1f} MiB of variables, '
          f'{len(ctx.forget) + len(ctx.retain)} synthetic rows', flush=True)
    serves = lambda name: set(create_method(name).requires) <= task.capabilities
    names = [m for m in _MEMORY_METHODS.value or METHODS.names()
             if serves(m) and (model_name == 'transformer' or m not in LM_METHODS)]
    for name in names:
      # One epoch: peak memory does not depend on how many.
      hparams = {k: 1 for k in method_defaults(name) if k in ('epochs', 'ensemble_epochs')}
      if model_name == 'transformer':   # the LM benchmark's rates, batches and layers
        hparams = {**config_lib.method_hparams(config, name), **hparams}
      if 'overrides' in method_defaults(name):   # smooth: its wrapped method's epochs too
        hparams['overrides'] = {**hparams.get('overrides', {}), 'epochs': 1}
      label = name
      if name in ENSEMBLE_METHODS:
        if model_name == 'resnet18':
          rows.append((model_name, name, 'skipped: trains a ResNet-18 ensemble', ''))
          continue
        hparams['num_models'] = _ENSEMBLE_MODELS.value
        label = f'{name} ({_ENSEMBLE_MODELS.value} models)'
      method = create_method(name, **hparams)
      try:
        run_method(method, variables, ctx, name)   # compiles
        gc.collect()
        _reset_peak()
        base = _rss_mib('VmRSS')
        began = time.perf_counter()
        run_method(method, variables, ctx, name)
        rows.append((model_name, label, _rss_mib('VmHWM') - base, time.perf_counter() - began))
      except Exception as e:   # report and go on: one method must not sink the table
        rows.append((model_name, label, f'failed: {type(e).__name__}: {e}'[:80], ''))
      print(f'    {rows[-1]}', flush=True)
    if model_name == 'transformer' and (not _MEMORY_METHODS.value
                                        or 'dp2unlearning' in _MEMORY_METHODS.value):
      rows.append((model_name, 'dp-sgd (private model, 1 epoch)',
                   *private_training_memory(config, task, ctx, variables)))
      print(f'    {rows[-1]}', flush=True)
  table(('model', 'method', 'peak MiB', 'seconds'), rows)
  if _MEMORY_OUT.value:
    run = {'command': 'python benchmarks/perf.py ' + ' '.join(sys.argv[1:]),
           'date': time.strftime('%Y-%m-%d'), 'machine': machine(),
           'commit': runs.git_commit() or 'unknown',
           'load_average_end': load(), 'columns': ['model', 'method', 'peak MiB', 'seconds'],
           'rows': [list(r) for r in rows]}
    with open(_MEMORY_OUT.value, 'w') as f:
      json.dump(run, f, indent=2)
      f.write('\n')
    if _MEMORY_PAGE.value:
      with open(_MEMORY_PAGE.value, 'w') as f:
        f.write(memory_page(run, _MEMORY_OUT.value))


def memory_page(run: dict, json_path: str) -> str:
  """The memory section's Markdown page, from its JSON."""
  rows = ['| ' + ' | '.join(_fmt(c) for c in r) + ' |' for r in run['rows']]
  return '\n'.join([
      '# Peak memory of each method', '',
      f"Generated by `benchmarks/perf.py` from its run [{os.path.basename(json_path)}]"
      f"(benchmarks/{os.path.basename(json_path)}); remake both with", '', '```bash',
      run['command'], '```', '',
      f"Machine: {run['machine']}; commit {run['commit']}; {run['date']}; load average at the "
      f"end {run['load_average_end']} (1/5/15 min).", '',
      'Each row: growth of the process\'s peak resident memory (host RAM on a CPU) during a '
      'second, compiled run of one epoch, and that run\'s seconds. Models and requests are '
      "described in the script's docstring; `transformer` is the default LM on a synthetic "
      'request of the forget05 shape, with the LM benchmark\'s hyper-parameters.', '',
      '| ' + ' | '.join(run['columns']) + ' |', '|' + '---|' * len(run['columns']), *rows, ''])


def private_training_memory(config, task, ctx, variables) -> tuple[float, float]:
  """(peak RSS growth MiB, seconds) of one epoch of DP2Unlearning's DP-SGD training on the
  request's rows (`lm_config.private_recipe`), a second, compiled run."""
  recipe = private_recipe(config)
  with recipe.unlocked():
    recipe.epochs = 1
  rows = concat(ctx.forget, ctx.retain)
  train = lambda: train_model(task, recipe, rows, seed=0, mesh=ctx.mesh, start=variables)
  train()   # compiles
  gc.collect()
  _reset_peak()
  base, began = _rss_mib('VmRSS'), time.perf_counter()
  train()
  return _rss_mib('VmHWM') - base, time.perf_counter() - began


def memory_request(model_name: str):
  """(config, task, synthetic request) of the memory section's model: 512 or 256 images
  (64 or 32 to forget), or the default LM's forget05 request in shape (241 of 4,832 rows
  of 56 tokens over 2,048 ids, scored from position 20, with refusal rows and 200
  held-out rows)."""
  mesh = sharding.make_mesh('data:1')
  if model_name == 'transformer':
    config = config_lib.load_config_file(os.path.join(ROOT, 'configs', 'tofu_lm.py'))
    vocab, length, n, n_forget = 2048, 56, 4832, 241
    rng = np.random.default_rng(0)
    tokens = lambda count: rng.integers(1, vocab, (count, length)).astype(np.int32)
    m = np.zeros((n + 200, length), np.float32)
    m[:, 20:] = 1
    data = Examples(x=tokens(n + 200), m=m, xa=tokens(n + 200), ma=m)
    task = LanguageModel(create_model('transformer', vocab, **config.model.kwargs.to_dict()),
                         (length,), vocab_size=vocab)
    return config, task, Context(task, data.take(slice(0, n_forget)),
                                 data.take(slice(n_forget, n)), mesh, 0,
                                 holdout=data.take(slice(n, None)))
  config_name, shape, n, n_forget = {'cnn': ('fashion_mnist_cnn', (28, 28, 1), 512, 64),
                                     'resnet18': ('cifar10_resnet18', (32, 32, 3), 256, 32)
                                     }[model_name]
  config = recipe(config_name)
  data = synthetic(n, shape)
  task = Classification(create_model(model_name, 10, **config.model.kwargs.to_dict()), shape, 10)
  return config, task, Context(task, data.take(slice(0, n_forget)),
                               data.take(slice(n_forget, None)), mesh, 0)


def _refit_gram(features, labels, buffer, gamma, chunk):
  """Ridge head from scratch on (features, labels), the Gram matrix summed over row chunks."""
  d, c = buffer.shape[1], labels.shape[1]

  def add(acc, rows):
    f, y = rows
    x = jax.nn.relu(f @ buffer)
    return (acc[0] + x.T @ x, acc[1] + x.T @ y), None

  n = features.shape[0] - features.shape[0] % chunk
  parts = (features[:n].reshape(-1, chunk, features.shape[1]), labels[:n].reshape(-1, chunk, c))
  zeros = (jnp.zeros((d, d), features.dtype), jnp.zeros((d, c), features.dtype))
  (a, b), _ = jax.lax.scan(add, zeros, parts)
  x = jax.nn.relu(features[n:] @ buffer)
  a, b = a + x.T @ x, b + x.T @ labels[n:]
  return cho_solve(cho_factor(a + gamma * jnp.eye(d, dtype=a.dtype), lower=True), b)


def acu_flops(n: int, f: int, k: int, d: int, c: int = 10) -> tuple[float, float]:
  """Multiply-add FLOPs (x2) of one forget request and of a refit on the other n - f rows.

  forget (one Woodbury step on f rows): R Xᵀ and (R Xᵀ)·gain 2fd² each, X R Xᵀ
  and the f×f solve 2f²d each, the Cholesky f³/3, the head update ~2d²c;
  refit: buffer features 2(n-f)kd, the Gram matrix 2(n-f)d² (no symmetric
  product in XLA, for either side), XᵀY 2(n-f)dc, the Cholesky d³/3 and solve 2d²c.
  """
  m = n - f
  forget = 4 * f * d * d + 4 * f * f * d + f ** 3 / 3 + 2 * d * d * c + 2 * f * k * d
  refit = 2 * m * k * d + 2 * m * d * d + 2 * m * d * c + d ** 3 / 3 + 2 * d * d * c
  return forget, refit


def run_acu() -> None:
  n, k = _ACU_ROWS.value, _ACU_FEATURES.value
  sizes = [int(f) for f in _ACU_FORGET.value]
  section(f'(6) ACU: one forget request of {"/".join(map(str, sizes))} rows vs refitting the '
          f'ridge head on the other rows of {n:,}, {k} features, float64')
  rng = np.random.default_rng(0)
  features = rng.normal(size=(n, k))
  labels = rng.integers(0, 10, n)
  refit = jax.jit(_refit_gram, static_argnums=(4,))
  rows = []
  for width in map(int, _ACU_WIDTHS.value):
    buffer = acu.buffer_weights(0, k, width)
    with jax.enable_x64(True):
      y = ridge.one_hot(labels, 10)
      f64, b64 = jnp.asarray(features, jnp.float64), jnp.asarray(buffer, jnp.float64)
      state = _state_on_all(f64, y, b64)
      for f in sizes:
        refit_s = best_time(lambda: refit(f64[f:], y[f:], b64, ridge.GAMMA, 5000), 1)
        refitted = refit(f64[f:], y[f:], b64, ridge.GAMMA, 5000)
        forget_s = best_time(lambda: acu.forget_chunk(state, features[:f], labels[:f], buffer,
                                                      chunk_size=f).W)
        forgotten = acu.forget_chunk(state, features[:f], labels[:f], buffer, chunk_size=f).W
        diff = float(jnp.max(jnp.abs(forgotten - refitted)))
        forget_flops, refit_flops = acu_flops(n, f, k, width)
        rows.append((width, f, forget_s, refit_s, refit_s / forget_s,
                     refit_flops / forget_flops, f'{diff:.1e}'))
        print(f'    {rows[-1]}', flush=True)
  table(('width', 'forget rows', 'forget s', 'refit s', 'refit / forget',
         'FLOP ratio', 'max |W_forget - W_refit|'), rows)
  print('  The FLOP ratio (about n / 2f for wide heads) bounds the time ratio where both\n'
        '  sides run at matmul speed, as with 500 rows; a 100-row request is bound by\n'
        '  reading and writing the d×d matrix R instead, and gains less than its FLOPs.\n')


@jax.jit
def _state_on_all(features, labels, buffer):
  """(R, W) learned on all of D: the state a forget request starts from (untimed)."""
  x = jax.nn.relu(features @ buffer)
  a = x.T @ x + ridge.GAMMA * jnp.eye(x.shape[1], dtype=x.dtype)
  r = cho_solve(cho_factor(a, lower=True), jnp.eye(x.shape[1], dtype=x.dtype))
  return ridge.RidgeState(r, r @ (x.T @ labels))


def main(argv):
  del argv
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f'Unknown section {unknown[0]!r}; valid: {", ".join(SECTIONS)}.')
  if _DEVICES.value:
    jax.config.update('jax_num_cpu_devices', _DEVICES.value)
  logging.set_verbosity(logging.WARNING)   # train_model's per-epoch lines
  print(f'machine: {machine()}\nload average at start: {load()}\n', flush=True)
  chosen = set(_SECTIONS.value)
  peak = run_peak() if 'peak' in chosen else None
  for name, fn in (('jit', run_jit), ('fisher', run_fisher), ('flops', lambda: run_flops(peak)),
                   ('scaling', run_scaling), ('memory', run_memory), ('acu', run_acu)):
    if name in chosen:
      fn()
  print(f'load average at end: {load()} (2-core machine: above ~2 means other jobs ran)')


if __name__ == '__main__':
  app.run(main)
