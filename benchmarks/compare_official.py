r"""mu_jax against the official PyTorch SSD code, side by side in one run.

  pip install -c constraints.txt -e '.[compare]'
  git clone https://github.com/if-loops/selective-synaptic-dampening /path/to/ssd
  python benchmarks/compare_official.py --official=/path/to/ssd

Setting (issue-sized, a 2-core CPU's reach): the first --rows Fashion-MNIST
training rows (Debian's dataset-fashion-mnist), forget request = every row of
--forget_class among them (the official full-class script's case), mu_jax's CNN
trained on them for one epoch; its weights are carried into the same network in
torch (`torch_side.TorchCNN`). The official `ParameterPerturber` is imported
unchanged from the user's checkout and driven as its full-class script drives it
(`ssd_tuning`: forget pass, full pass, `modify_weight`; unshuffled loaders of
batch 64 over D_f and over D = D_r sorted by class then D_f). mu_jax runs
`ssd(order='reference')`, the same batches in the same order.

Checked in the same run: logits of the carried model, both importances,
selection masks and dampened weights (differences within float32 rounding).

Timed, both sides in their own processes, one call at a time, alternating
(torch, then mu_jax) for --rounds rounds; every figure is one call's wall time:
  ssd cold      the official SSD vs a mu_jax request with no cached statistics,
                the first thing a new process does (its compilation cache, a
                folder that earlier processes filled, is warm). The very first
                process, with an empty compilation cache, is reported apart
                with its compile time.
  ssd cached    a mu_jax request with I_D cached (a new process again): the
                official code has no cache, so it pays both passes.
  ssd warm      a second request in the same mu_jax process (nothing to
                compile, I_D not cached): the passes themselves.
  importance    one importance pass over D (batch 64) in a warm process.
  train step    --train_steps Adam steps (batch 128) of the official training
                loop's form over a shuffled DataLoader, against mu_jax's jitted
                train step of configs/fashion_mnist_cnn.py's recipe (which sums
                the gradients of two 64-row halves) fed by its own batching;
                warm on both sides.
Ratios are torch time / mu_jax time of adjacent calls (> 1: mu_jax is faster);
the table gives their median and range and the load average around them.
Writes the run as JSON (--out) and the Markdown page made from it (--page).
"""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from flax.traverse_util import flatten_dict, unflatten_dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import outputs  # noqa: E402
import workers  # noqa: E402
from workers import Process  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (only when run as a script: importing defines none)."""
  flags.DEFINE_string('official', None,
                      'A checkout of github.com/if-loops/selective-synaptic-dampening.')
  flags.DEFINE_string('data', 'idx:/usr/share/datasets/fashion-mnist', 'mu_jax data source.')
  flags.DEFINE_integer('rows', 20000, 'Training rows (D).')
  flags.DEFINE_integer('forget_class', 0, 'D_f: every row of this class.')
  flags.DEFINE_integer('rounds', 4, 'Alternating rounds.')
  flags.DEFINE_integer('train_steps', 100, 'Timed training steps per call.')
  flags.DEFINE_integer('threads', os.cpu_count(), 'torch intra-op threads.')
  flags.DEFINE_string('out', None, 'Write the run as JSON here.')
  flags.DEFINE_string('page', None, 'Write the Markdown page here.')
  flags.DEFINE_string('from_json', None, 'Only remake --page from this JSON.')


# The official full-class script's settings (forget_full_class_main.py): batch
# 64 (`-b`), λ = 1 and α = 10 (its ResNet18 runs).
SSD_BATCH, ALPHA, DAMPENING = 64, 10.0, 1.0
# mu_jax's Fashion-MNIST recipe (configs/fashion_mnist_cnn.py): Adam 1e-3, batch 128;
# torch's loop has no schedule (a cosine's cost is nil).
TRAIN_BATCH, LEARNING_RATE = 128, 1e-3


# ----------------------------------------------------------------------------- the JAX side

class JaxWorker:
  """The mu_jax process: the request's context, the original, timed calls."""

  def __init__(self, data_path: str, compile_cache: str):
    from mu_jax import compilation
    compilation.enable(compile_cache)
    import jax
    from jax._src import dispatch
    self.jax = jax
    self.compile_seconds = 0.0
    events = (dispatch.JAXPR_TRACE_EVENT, dispatch.JAXPR_TO_MLIR_MODULE_EVENT,
              dispatch.BACKEND_COMPILE_EVENT)

    def listen(event, seconds, **kwargs):
      if event in events:
        self.compile_seconds += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    data = dict(np.load(data_path))
    self.data = data
    self.ctx, self.variables = jax_setting(data)
    self.training = None

  def _timed(self, fn) -> dict:
    self.compile_seconds = 0.0
    began = time.perf_counter()
    self.jax.block_until_ready(fn())
    return {'seconds': time.perf_counter() - began, 'compile_seconds': self.compile_seconds}

  def ssd(self, cache_dir: str | None) -> dict:
    from mu_jax import sharding
    from mu_jax.methods.base import run_method
    from mu_jax.methods.ssd import ssd
    method = ssd(selection_weighting=ALPHA, dampening_constant=DAMPENING, order='reference')
    ctx = self.ctx._replace(cache_dir=cache_dir)
    return self._timed(lambda: sharding.to_host(run_method(method, self.variables, ctx).variables))

  def importance(self) -> dict:
    from mu_jax.influence import fisher
    rows = {'x': self.data['d_x'], 'y': self.data['d_y']}
    return self._timed(lambda: fisher.importance('batch', self.ctx.task, self.variables,
                                                 self.ctx, rows, SSD_BATCH, shuffle=False))

  def train(self, steps: int) -> dict:
    """`steps` jitted train steps over shuffled batches of D (mu_jax's batching)."""
    from mu_jax import sharding
    from mu_jax.data.batching import epoch_batches
    from mu_jax.train import sharded_training, zero_stats
    arrays = {'x': self.data['d_x'], 'y': self.data['d_y']}
    if self.training is None:   # one jitted step for every call: later calls trace nothing
      self.training = sharded_training(self.ctx.task, train_recipe(), steps, seed=0,
                                       mesh=self.ctx.mesh)
    state, step = self.training

    def run():
      nonlocal state
      totals, done, epoch = zero_stats(self.ctx.mesh), 0, 0
      while done < steps:
        for batch in epoch_batches(arrays, TRAIN_BATCH, seed=0, epoch=epoch):
          state, totals, _ = step(state, totals, sharding.shard_batch(batch, self.ctx.mesh))
          done += 1
          if done == steps:
            break
        epoch += 1
      self.training = (state, step)
      return state

    return self._timed(run)


def train_recipe():
  """configs/fashion_mnist_cnn.py's recipe (Adam 1e-3, cosine, batch 128, gradients
  of 64 rows at a time), one epoch."""
  from mu_jax.configs import fashion_mnist_cnn
  recipe = fashion_mnist_cnn.get_config().train.copy_and_resolve_references()
  recipe.epochs = 1
  assert (recipe.batch_size, recipe.learning_rate) == (TRAIN_BATCH, LEARNING_RATE)
  return recipe


def jax_setting(data: dict):
  """(Context of the request, replicated variables) from the run's arrays."""
  from mu_jax import sharding
  from mu_jax.data import Examples
  from mu_jax.methods.base import Context
  ctx = Context(cnn_task(), Examples(x=data['f_x'], y=data['f_y']),
                Examples(x=data['r_x'], y=data['r_y']), sharding.make_mesh('data:1'), 0)
  params = {k[len('p:'):]: v for k, v in data.items() if k.startswith('p:')}
  return ctx, sharding.replicate({'params': unflatten_dict(params, sep='/')}, ctx.mesh)


def cnn_task():
  from mu_jax.models import create_model
  from mu_jax.tasks import create_task
  return create_task('classification', create_model('cnn', 10), (28, 28, 1), 10)


def serve_jax(conn, data_path: str, compile_cache: str) -> None:
  workers.answer(conn, JaxWorker(data_path, compile_cache), 'ready')


# ----------------------------------------------------------------------------- setting and agreement

def prepare(directory: str) -> tuple[str, dict]:
  """Trains the original, writes the run's arrays to <directory>/data.npz; returns
  (its path, facts for the report)."""
  import jax
  from mu_jax import sharding
  from mu_jax.data import Examples
  from mu_jax.data.splits import load_dataset
  from mu_jax.methods.ssd import passes
  from mu_jax.train import train_model
  import torch_side
  train = load_dataset(FLAGS.data, val_fraction=5000 / 60000).train
  x, y = train['x'][:FLAGS.rows], train['y'][:FLAGS.rows]
  forget = y == FLAGS.forget_class
  task = cnn_task()
  trained = train_model(task, train_recipe(), Examples(x=x, y=y), seed=0,
                        mesh=sharding.make_mesh('data:1'), name='original')
  params = jax.device_get(trained.variables['params'])
  ctx = jax_setting({'f_x': x[forget], 'f_y': y[forget], 'r_x': x[~forget],
                     'r_y': y[~forget],
                     **{f'p:{k}': v for k, v in flatten_dict(params, sep='/').items()}})[0]
  d_pass, f_pass = passes(ctx, 'reference', None)
  assert d_pass.batch_size == f_pass.batch_size == SSD_BATCH and not d_pass.shuffle
  arrays = {'d_x': d_pass.rows['x'], 'd_y': d_pass.rows['y'], 'f_x': x[forget], 'f_y': y[forget],
            'r_x': x[~forget], 'r_y': y[~forget],
            **{f'p:{k}': v for k, v in flatten_dict(params, sep='/').items()},
            **{f'w:{k}': v for k, v in torch_side.to_torch(params).items()}}
  path = os.path.join(directory, 'data.npz')
  np.savez(path, **arrays)
  return path, {'rows': int(len(y)), 'forget_rows': int(forget.sum()),
                'original_train_seconds': trained.train_seconds}


def agreement(data_path: str, torch_proc: Process) -> dict:
  """Logits, importances, masks and dampened weights of both sides, compared."""
  import jax
  from mu_jax.influence import fisher
  from mu_jax.methods.ssd import dampen, eligible_leaves, passes
  from mu_jax.models import split_variables
  import torch_side
  data = dict(np.load(data_path))
  ctx, variables = jax_setting(data)
  params, _ = split_variables(variables)
  logits = np.asarray(ctx.task.apply(variables, {'x': data['d_x'][:512]}, False)[0])
  torch_logits = torch_proc('logits', rows=512)
  reference = torch_proc('ssd', alpha=ALPHA, dampening=DAMPENING, batch_size=SSD_BATCH, keep=True)
  d_pass, f_pass = passes(ctx, 'reference', None)
  ours = {'importance_d': fisher.importance('batch', ctx.task, variables, ctx, d_pass.rows,
                                            SSD_BATCH, shuffle=False),
          'importance_f': fisher.importance('batch', ctx.task, variables, ctx, 'forget',
                                            SSD_BATCH, shuffle=False)}
  weights, selected = dampen(params, ours['importance_d'], ours['importance_f'],
                             eligible_leaves(params, ''), alpha=ALPHA, dampening=DAMPENING)
  ours = jax.device_get({**ours, 'weights': weights, 'selected': selected})
  theirs = {k: flatten_dict(torch_side.to_flax(reference[k]), sep='/') for k in
            ('importance_d', 'importance_f', 'weights')}
  mine = {k: flatten_dict(ours[k], sep='/')
          for k in ('importance_d', 'importance_f', 'weights', 'selected')}
  # The official rule, torch.where(fimp > oimp * alpha), on the official importances.
  official_mask = {k: theirs['importance_f'][k] > theirs['importance_d'][k] * np.float32(ALPHA)
                   for k in mine['selected']}
  rel = lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
  original = flatten_dict(jax.device_get(params), sep='/')
  eps = np.finfo(np.float32).eps
  return {
      'logits_max_abs_diff': float(np.max(np.abs(logits - torch_logits))),
      'importance_d_max_rel_diff': max(rel(mine['importance_d'][k], theirs['importance_d'][k])
                                       for k in mine['selected']),
      'importance_f_max_rel_diff': max(rel(mine['importance_f'][k], theirs['importance_f'][k])
                                       for k in mine['selected']),
      'selected_mu_jax': int(sum(v.sum() for v in mine['selected'].values())),
      'selected_official': int(sum(v.sum() for v in official_mask.values())),
      'mask_disagreements': int(sum((mine['selected'][k] != official_mask[k]).sum()
                                    for k in official_mask)),
      'weights_max_abs_diff': max(float(np.max(np.abs(mine['weights'][k] - theirs['weights'][k])))
                                  for k in official_mask),
      # a weight beyond float32 rounding: |Δ| > 8 ulp of the original weight's magnitude
      'weights_beyond_rounding': int(sum(
          (np.abs(mine['weights'][k] - theirs['weights'][k]) >
           8 * eps * np.maximum(np.abs(original[k]), np.finfo(np.float32).tiny)).sum()
          for k in official_mask)),
  }


# ----------------------------------------------------------------------------- timing

def rounds(data_path: str, torch_proc: Process, directory: str) -> dict:
  """The alternating calls; returns every call's figures by kind."""
  compile_cache = os.path.join(directory, 'xla_cache')
  out: dict[str, list] = {k: [] for k in ('torch_ssd', 'ssd_cold', 'ssd_cached', 'ssd_warm',
                                          'torch_importance', 'importance',
                                          'torch_train', 'train')}
  first = Process(serve_jax, data_path, compile_cache)   # empty compilation cache
  out['first_process'] = first('ssd', cache_dir=None)
  first.close()
  torch_proc('ssd', alpha=ALPHA, dampening=DAMPENING, batch_size=SSD_BATCH)   # torch warm-up
  for r in range(FLAGS.rounds):
    stats = os.path.join(directory, f'stats-{r}')
    out['torch_ssd'].append(torch_proc('ssd', alpha=ALPHA, dampening=DAMPENING,
                                       batch_size=SSD_BATCH))
    jax_proc = Process(serve_jax, data_path, compile_cache)
    out['ssd_cold'].append(jax_proc('ssd', cache_dir=stats))   # computes and caches I_D
    jax_proc.close()
    out['torch_ssd'].append(torch_proc('ssd', alpha=ALPHA, dampening=DAMPENING,
                                       batch_size=SSD_BATCH))
    jax_proc = Process(serve_jax, data_path, compile_cache)
    out['ssd_cached'].append(jax_proc('ssd', cache_dir=stats))
    out['torch_ssd'].append(torch_proc('ssd', alpha=ALPHA, dampening=DAMPENING,
                                       batch_size=SSD_BATCH))
    out['ssd_warm'].append(jax_proc('ssd', cache_dir=None))
    out['torch_importance'].append(torch_proc('importance', batch_size=SSD_BATCH))
    out['importance'].append(jax_proc('importance'))
    jax_proc('train', steps=FLAGS.train_steps)   # compiles
    out['torch_train'].append(torch_proc('train', steps=FLAGS.train_steps,
                                         batch_size=TRAIN_BATCH, learning_rate=LEARNING_RATE))
    out['train'].append(jax_proc('train', steps=FLAGS.train_steps))
    jax_proc.close()
  return out


def summary(calls: dict) -> list[dict]:
  """One row per comparison: both sides' median seconds, the ratio's median and range."""
  torch_ssd = calls['torch_ssd']   # three per round: before cold, before cached, before warm
  pairs = {'ssd cold (new process, compilation cache warm)': (torch_ssd[0::3], calls['ssd_cold']),
           'ssd with I_D cached (new process)': (torch_ssd[1::3], calls['ssd_cached']),
           'ssd warm (same process, nothing cached)': (torch_ssd[2::3], calls['ssd_warm']),
           'importance pass over D': (calls['torch_importance'], calls['importance']),
           'train steps': (calls['torch_train'], calls['train'])}
  rows = []
  for name, (theirs, ours) in pairs.items():
    ratios = [t['seconds'] / o['seconds'] for t, o in zip(theirs, ours)]
    loads = [c['load'] for c in theirs + ours]
    rows.append({'comparison': name,
                 'official_seconds': statistics.median(t['seconds'] for t in theirs),
                 'mu_jax_seconds': statistics.median(o['seconds'] for o in ours),
                 'mu_jax_compile_seconds': statistics.median(o['compile_seconds'] for o in ours),
                 'ratio_median': statistics.median(ratios), 'ratio_min': min(ratios),
                 'ratio_max': max(ratios), 'load_min': min(loads), 'load_max': max(loads)})
  return rows


# ----------------------------------------------------------------------------- report

def page(run: dict) -> str:
  """The Markdown page of a run (its JSON)."""
  a, m = run['agreement'], run['machine']
  first = run['calls']['first_process']
  lines = [
      '# Speed against the official SSD code', '',
      f'Generated by `benchmarks/compare_official.py` from its run '
      f'[{run["json_name"]}](benchmarks/{run["json_name"]}); remake both with', '',
      '```bash',
      "pip install -c constraints.txt -e '.[compare]'",
      'python benchmarks/compare_official.py --official=<checkout of '
      'github.com/if-loops/selective-synaptic-dampening> \\',
      f'  --out=docs/benchmarks/{run["json_name"]} --page=docs/performance.md',
      '```', '',
      f'Machine: {m["cpu"]}, {m["cores"]} cores; jax {m["jax"]}, torch {m["torch"]} '
      f'({m["torch_threads"]} threads); mu_jax {m["commit"]}.',
      f'Setting: {run["setting"]["rows"]:,} Fashion-MNIST rows, D_f = {run["setting"]["forget_rows"]:,} '
      f'rows of one class, batch {SSD_BATCH} (SSD) and {TRAIN_BATCH} (training), '
      f'{run["setting"]["train_steps"]} steps per training call, {run["setting"]["rounds"]} rounds.',
      '', '## Agreement with the official code (same run)', '',
      '| check | value |', '|---|---|',
      f'| logits, max abs difference | {a["logits_max_abs_diff"]:.2e} |',
      f'| I_D, max relative difference | {a["importance_d_max_rel_diff"]:.2e} |',
      f'| I_Df, max relative difference | {a["importance_f_max_rel_diff"]:.2e} |',
      f'| weights selected (mu_jax / official) | {a["selected_mu_jax"]:,} / {a["selected_official"]:,} |',
      f'| mask disagreements | {a["mask_disagreements"]} |',
      f'| dampened weights, max abs difference | {a["weights_max_abs_diff"]:.2e} |',
      f'| weights beyond float32 rounding | {a["weights_beyond_rounding"]} |',
      '', '## Time, side by side', '',
      'Each figure is one call\'s wall time, both sides in their own processes, called in '
      'alternation; ratio = official seconds / mu_jax seconds of adjacent calls (> 1: mu_jax '
      'faster), median and range over the rounds; load = the 1-minute load average after '
      'the calls. The rows are described in the script\'s docstring.', '',
      '| comparison | official s | mu_jax s | mu_jax compile s | ratio (median) | range | load |',
      '|---|---|---|---|---|---|---|']
  for r in run['rows']:
    lines.append(f'| {r["comparison"]} | {r["official_seconds"]:.2f} | {r["mu_jax_seconds"]:.2f} | '
                 f'{r["mu_jax_compile_seconds"]:.2f} | {r["ratio_median"]:.2f}× | '
                 f'{r["ratio_min"]:.2f}–{r["ratio_max"]:.2f} | {r["load_min"]:.1f}–{r["load_max"]:.1f} |')
  lines += ['', f'First process, empty compilation cache: the cold request took '
                f'{first["seconds"]:.2f} s, of which {first["compile_seconds"]:.2f} s tracing and '
                'compiling.', '']
  return '\n'.join(lines)


def machine() -> dict:
  """The facts the page names, from the run provenance every mu_jax run records."""
  import jax
  from mu_jax.experiments import runs
  host = runs.machine()
  return {'cpu': host['cpu'], 'cores': host['cores'], 'jax': jax.__version__,
          'commit': runs.git_commit() or 'unknown'}


def main(argv):
  del argv
  if FLAGS.from_json:
    with open(FLAGS.from_json, encoding='utf-8') as f:
      run = json.load(f)
    with open(FLAGS.page or '/dev/stdout', 'w', encoding='utf-8') as f:
      f.write(page(run))
    return
  if not FLAGS.official:
    raise app.UsageError('--official=<checkout of github.com/if-loops/selective-synaptic-dampening>'
                         ' is required.')
  import torch_side
  torch_side.import_official(FLAGS.official)   # fails early on a wrong checkout
  facts = machine()   # the commit as the run starts
  with tempfile.TemporaryDirectory(prefix='compare_official.') as directory:
    data_path, setting = prepare(directory)
    torch_proc = Process(torch_side.serve, data_path, FLAGS.official, FLAGS.threads)
    print(f'torch {torch_proc.hello["torch"]}, {torch_proc.hello["threads"]} threads; '
          f'placeholder modules for the official file: {torch_proc.hello["stubbed"] or "none"}')
    agreed = agreement(data_path, torch_proc)
    print(json.dumps(agreed, indent=1))
    calls = rounds(data_path, torch_proc, directory)
    torch_proc.close()
  run = {'machine': {**facts, 'torch': torch_proc.hello['torch'],
                     'torch_threads': torch_proc.hello['threads'],
                     'placeholders': torch_proc.hello['stubbed']},
         'setting': {**setting, 'rounds': FLAGS.rounds, 'train_steps': FLAGS.train_steps},
         'agreement': agreed, 'calls': calls, 'rows': summary(calls),
         'json_name': os.path.basename(FLAGS.out or 'compare_official.json')}
  outputs.write(run, page(run), FLAGS.out, FLAGS.page)


if __name__ == '__main__':
  define_flags()
  app.run(main)
