r"""mu_jax's LM training, unlearning and evaluation steps against the loop that
open-unlearning users run (Hugging Face transformers, PyTorch eager), side by side.

  pip install -c constraints.txt -e '.[compare]'    # torch (CPU) and transformers
  python benchmarks/lm_perf.py --out=docs/benchmarks/lm_perf.json --page=docs/lm_performance.md

Setting: mu_jax's transformer in its 'small' preset (d 256, 4
layers, 4 heads, d_ff 768; vocabulary 4096, context 128), initialised with
--seed, and one batch of --batch random token rows drawn with that seed, every
token scored but the first. Its weights are carried into a transformers
`LlamaForCausalLM` of the same shape (`hf_side.to_hf`); both sides get the
same weights and the same batch.

Checked in the same run: logits of both models, the losses of two consecutive
steps of each kind, and the evaluation pass's per-sequence NLL sums.

Timed, each side in its own process, one call at a time, alternating (torch,
then mu_jax) for --rounds rounds after a warm-up (a step of each kind, where
mu_jax compiles, then one untimed round), each call after --pause seconds of
idle machine, so that no call starts while the other side's threads still hold
the cores (the torch side alone runs at the same speed with or without the
pause); every call runs --steps steps of one kind on the same batch:
  train     mu_jax's jitted train step (`train.sharded_training`, AdamW) vs the
            HF Trainer's step (hf_side);
  ascent    gradient ascent: the mean loss negated (`baselines.gradient_ascent_loss`);
  npo       NPO's forget term on per-sequence NLL sums (the task's 'nll_sum'),
            reference weights frozen, with `npo.npo_loss`'s formula, which is
            open-unlearning's `compute_dpo_loss` written with softplus;
  evaluate  a forward and `token_statistics`' per-sequence NLL sums, jitted.
Both optimizers are AdamW (--learning_rate, --weight_decay on every weight).
Also timed: a jitted float32 matmul of --matmul² (JAX) and torch's, the peak
the model FLOP utilisation is measured against; mu_jax's train step in a
process of --devices fake CPU devices on the mesh --sharded_mesh; and its
train and ascent steps in a process where attention and the loss's softmax do
no work (`stand_ins`), which bounds what any attention or loss kernel could
gain while the rest of the step stays as XLA compiles it.
Writes the run as JSON (--out) and the Markdown page made from it (--page).
"""
import contextlib
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

KINDS = ('train', 'ascent', 'npo', 'evaluate')
NAMES = {'train': 'training step', 'ascent': 'gradient ascent step', 'npo': 'NPO step',
         'evaluate': 'evaluation pass'}
# The goals: (least ratio torch s / mu_jax s, least MFU of mu_jax or None).
GOALS = {'train': (1.0, 0.7), 'ascent': (1.0, 0.7), 'npo': (1.5, None), 'evaluate': (1.5, None)}
# Forward and backward passes of one step, in forwards: a backward is two.
FORWARDS = {'train': 3, 'ascent': 3, 'npo': 4, 'evaluate': 1}
NPO_BETA = 0.1   # the NPO paper's β, as open-unlearning's configs/trainer/NPO.yaml
AGREEMENT_ROWS = 8
BOUND_KINDS = ('train', 'ascent')   # the steps also timed under `stand_ins`


def define_flags() -> None:
  """The command's flags (only when run as a script: importing defines none)."""
  flags.DEFINE_integer('d_model', 256, 'Model width.')
  flags.DEFINE_integer('num_layers', 4, 'Blocks.')
  flags.DEFINE_integer('num_heads', 4, 'Attention heads.')
  flags.DEFINE_integer('d_ff', 768, 'SwiGLU width.')
  flags.DEFINE_integer('vocab', 4096, 'Vocabulary size.')
  flags.DEFINE_integer('context', 128, 'Tokens per row.')
  flags.DEFINE_integer('batch', 32, 'Rows per batch.')
  flags.DEFINE_integer('seed', 0, 'Seed of the weights and the batch.')
  flags.DEFINE_float('learning_rate', 1e-5, 'AdamW learning rate (open-unlearning: 1e-5).')
  flags.DEFINE_float('weight_decay', 0.01, 'AdamW weight decay (open-unlearning: 0.01).')
  flags.DEFINE_integer('rounds', 4, 'Alternating rounds.')
  flags.DEFINE_float('pause', 1.0, 'Seconds of idle machine before each timed call.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per call.')
  flags.DEFINE_integer('threads', 2, 'torch intra-op threads.')
  flags.DEFINE_integer('matmul', 2048, 'Side of the square matmul of the peak.')
  flags.DEFINE_integer('devices', 8, 'Fake CPU devices of the sharded process.')
  flags.DEFINE_string('sharded_mesh', 'data:4,model:2', 'Mesh of the sharded process.')
  flags.DEFINE_string('out', None, 'Write the run as JSON here.')
  flags.DEFINE_string('page', None, 'Write the Markdown page here.')
  flags.DEFINE_string('from_json', None, 'Only remake --page from this JSON.')
  flags.DEFINE_bool('reuse_freed_memory', True, "mu_jax's processes apply mu_jax.host_memory, "
                    'as the mu-jax command does.')


# ----------------------------------------------------------------------------- the JAX side

def lm_task(config: dict):
  """The language-model task of a transformer config (`TransformerConfig` fields)."""
  from mu_jax.models import create_model
  from mu_jax.tasks import create_task
  options = {k: v for k, v in config.items() if k != 'vocab_size'}
  model = create_model('transformer', config['vocab_size'], **options)
  return create_task('language_model', model, (config['max_len'],), config['vocab_size'])


def npo_objective(task, beta: float = NPO_BETA):
  """objective(params, batch, ref_params): NPO's forget loss on per-sequence NLL sums."""
  from mu_jax.methods.npo import npo_loss

  def nll_sums(params, batch, train):
    outputs, _ = task.apply({'params': params}, batch, train)
    return task.statistics(outputs, batch)['nll_sum']

  def objective(params, batch, ref_params):
    return npo_loss(nll_sums(params, batch, True), nll_sums(ref_params, batch, False),
                    batch['w'], beta)

  return objective


def unlearning_step(objective, tx):
  """The jitted step (state, batch, ref_params) -> (state, loss) of an optax `tx` on
  objective(params, batch, ref_params); the state it replaces is donated."""
  import jax
  import optax

  def step(state, batch, ref_params):
    loss, grads = jax.value_and_grad(objective)(state.params, batch, ref_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state._replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state), loss

  return jax.jit(step, donate_argnums=0)


def evaluation(task):
  """The jitted per-sequence NLL sums (params, batch) -> [N] (`token_statistics`)."""
  import jax
  from mu_jax.evaluation.lm.tokens import token_statistics

  def nll_sums(params, batch):
    logits, _ = task.apply({'params': params}, batch, False)
    return token_statistics(logits, batch['x'], batch['m'])['nll_sum']

  return jax.jit(nll_sums)


class JaxWorker:
  """A mu_jax process on the mesh `mesh_spec`: the run's model and batch, timed calls."""

  def __init__(self, data_path: str, mesh_spec: str):
    import jax
    from mu_jax import sharding
    self.jax = jax
    data = dict(np.load(data_path))
    self.setting = json.loads(str(data['setting']))
    self.task = lm_task(json.loads(str(data['config'])))
    params = {k[len('p:'):]: v for k, v in data.items() if k.startswith('p:')}
    self.params = unflatten_dict(params, sep='/')
    self.batch = {'x': data['x'], 'm': data['m'], 'w': np.ones(len(data['x']), np.float32)}
    self.mesh = sharding.make_mesh(mesh_spec)
    self.steps = {}

  def _step(self, kind: str):
    """A function running one step of `kind` from the run's weights, returning (the
    step's loss or NLL sums, everything to wait for)."""
    from ml_collections import ConfigDict
    from mu_jax import sharding
    from mu_jax.methods.baselines import gradient_ascent_loss
    from mu_jax.optim import make_optimizer
    from mu_jax.train import sharded_training, state_from, zero_stats
    jax, s = self.jax, self.setting
    if kind == 'train':
      recipe = {'optimizer': 'adamw', 'learning_rate': s['learning_rate'], 'epochs': 1,
                'momentum': 0.0, 'weight_decay': s['weight_decay'], 'schedule': 'constant',
                'batch_size': s['batch']}
      state, step = sharded_training(self.task, ConfigDict(recipe), 1, seed=0, mesh=self.mesh,
                                     start={'params': self.params})
      totals, batch = zero_stats(self.mesh), sharding.shard_batch(self.batch, self.mesh)

      def train():
        nonlocal state, totals
        state, totals, loss = sharding.pace(step(state, totals, batch), self.mesh)
        return loss, state

      return train
    batch, params = jax.device_put(self.batch), jax.device_put(self.params)
    if kind == 'evaluate':
      nll_sums = evaluation(self.task)

      def evaluate():
        out = nll_sums(params, batch)
        return out, out

      return evaluate
    tx = make_optimizer('adamw', s['learning_rate'], total_steps=1,
                        weight_decay=s['weight_decay'])
    objective = {'ascent': lambda p, b, ref: gradient_ascent_loss(
                     self.task, {'params': p}, b, None)[0],
                 'npo': npo_objective(self.task)}[kind]
    # from the host weights: the state's buffers, donated every step, are not `params`'
    step, state = unlearning_step(objective, tx), jax.device_put(
        state_from({'params': self.params}, tx))

    def unlearn():
      nonlocal state
      state, loss = step(state, batch, params)
      return loss, state

    return unlearn

  def logits(self, rows: int) -> np.ndarray:
    return np.asarray(self.task.apply({'params': self.params}, {'x': self.batch['x'][:rows]},
                                      False)[0])

  def losses(self, kind: str, steps: int) -> list:
    """The loss (NLL sums for 'evaluate') of each of `steps` fresh steps of `kind`."""
    step = self._step(kind)
    return [np.asarray(step()[0]).tolist() for _ in range(steps)]

  def run(self, kind: str, steps: int) -> dict:
    """`steps` steps of `kind`, timed (the first call of a kind builds it, untimed)."""
    if kind not in self.steps:
      self.steps[kind] = self._step(kind)
    step, began = self.steps[kind], time.perf_counter()
    for _ in range(steps):
      out = step()
    self.jax.block_until_ready(out)
    return {'seconds': time.perf_counter() - began}

  def matmul(self, size: int, repeats: int) -> dict:
    """The best float32 [size, size] jitted matmul rate over `repeats` calls, GFLOP/s."""
    jax = self.jax
    a, b = jax.random.normal(jax.random.PRNGKey(0), (2, size, size), np.float32)
    product = jax.jit(jax.numpy.matmul)
    product(a, b).block_until_ready()
    best = float('inf')
    for _ in range(repeats):
      began = time.perf_counter()
      product(a, b).block_until_ready()
      best = min(best, time.perf_counter() - began)
    return {'gflops': 2 * size ** 3 / best / 1e9}


@contextlib.contextmanager
def stand_ins():
  """Within it, the transformer's attention core (score and value products, mask,
  softmax) and the LM loss's log-softmax are elementwise stand-ins that keep every
  other op of a step and its gradient: q, k and v still reach the loss, and the
  head's output too. Timing a step under it bounds what a faster attention or loss
  could make of the step, everything else unchanged."""
  from unittest import mock
  import jax.numpy as jnp
  from mu_jax.models import transformer
  from mu_jax.tasks import language_model
  with mock.patch.object(transformer, '_attention',
                         lambda q, k, v, mask: v + q * k * 1e-30), \
       mock.patch.object(language_model, 'token_nll',
                         lambda logits, x: jnp.mean(logits, -1)):
    yield


def serve_jax(conn, data_path: str, mesh_spec: str, reuse_freed_memory: bool,
              with_stand_ins: bool = False) -> None:
  """Answers (method, kwargs) requests on `conn` until it receives None, under
  `stand_ins` if asked; first, before JAX starts, applies `mu_jax.host_memory` as
  the `mu-jax` command does."""
  from mu_jax import host_memory
  reused = reuse_freed_memory and host_memory.reuse_freed_memory()
  import jax
  with stand_ins() if with_stand_ins else contextlib.nullcontext():
    workers.answer(conn, JaxWorker(data_path, mesh_spec),
                   {'devices': jax.device_count(), 'reuse_freed_memory': reused})


def with_devices(devices: int, target, *args) -> Process:
  """A worker `Process` whose XLA:CPU shows `devices` fake devices."""
  before = os.environ.get('XLA_FLAGS')
  os.environ['XLA_FLAGS'] = (f'{before or ""} '
                             f'--xla_force_host_platform_device_count={devices}').strip()
  try:
    return Process(target, *args)
  finally:
    if before is None:
      del os.environ['XLA_FLAGS']
    else:
      os.environ['XLA_FLAGS'] = before


# ---------------------------------------------------------------------------- setting and agreement

def setting_of(values) -> dict:
  """The run's setting from the flags (or any object with the same attributes)."""
  keys = ('d_model', 'num_layers', 'num_heads', 'd_ff', 'vocab', 'context', 'batch', 'seed',
          'learning_rate', 'weight_decay', 'rounds', 'pause', 'steps', 'threads', 'matmul',
          'devices', 'sharded_mesh')
  return {**{k: getattr(values, k) for k in keys}, 'beta': NPO_BETA}


def prepare(setting: dict, directory: str) -> str:
  """Initialises the model and draws the batch; writes them to <directory>/data.npz."""
  import dataclasses
  import jax
  from mu_jax.models import transformer
  cfg = transformer.make_config(
      setting['vocab'], d_model=setting['d_model'], num_layers=setting['num_layers'],
      num_heads=setting['num_heads'], d_ff=setting['d_ff'], max_len=setting['context'])
  config = dataclasses.asdict(cfg)
  variables = lm_task(config).init(jax.random.PRNGKey(setting['seed']))
  rng = np.random.default_rng(setting['seed'])
  x = rng.integers(0, setting['vocab'], (setting['batch'], setting['context'])).astype(np.int32)
  m = np.ones(x.shape, np.float32)
  m[:, 0] = 0.0   # the first token is never predicted
  params = flatten_dict(jax.device_get(variables['params']), sep='/')
  path = os.path.join(directory, 'data.npz')
  np.savez(path, x=x, m=m, config=json.dumps(config), setting=json.dumps(setting),
           learning_rate=setting['learning_rate'], weight_decay=setting['weight_decay'],
           **{f'p:{k}': v for k, v in params.items()})
  return path


def agreement(data_path: str, torch_proc: Process) -> dict:
  """Logits, two steps' losses of each kind and the NLL sums of both sides, compared."""
  ours = JaxWorker(data_path, 'data:1')
  logits = ours.logits(AGREEMENT_ROWS)
  out = {'logits_max_abs_diff': float(np.max(np.abs(
      logits - torch_proc('logits', rows=AGREEMENT_ROWS))))}
  for kind in KINDS:
    steps = 1 if kind == 'evaluate' else 2
    mine = np.asarray(ours.losses(kind, steps))
    theirs = np.asarray(torch_proc('losses', kind=kind, steps=steps))
    out[kind] = {'mu_jax': mine.tolist(), 'torch': theirs.tolist(),
                 'max_abs_diff': float(np.max(np.abs(mine - theirs)))}
  return out


# ----------------------------------------------------------------------------- timing

def rounds(setting: dict, torch_proc: Process, jax_proc: Process, sharded: Process,
           bound: Process) -> dict:
  """The warm-up, then the alternating calls; returns every call's figures by kind
  (`bound` is the process under `stand_ins`)."""
  calls: dict[str, list] = {k: [] for k in ('torch_matmul', 'jax_matmul', 'sharded_train')}
  for kind in KINDS:
    calls[f'torch_{kind}'], calls[f'mu_jax_{kind}'] = [], []
    torch_proc('run', kind=kind, steps=1)
    jax_proc('run', kind=kind, steps=1)   # compiles
  for kind in BOUND_KINDS:
    calls[f'bound_{kind}'] = []
    bound('run', kind=kind, steps=1)
  sharded('run', kind='train', steps=1)
  steps, size = setting['steps'], setting['matmul']

  def timed(proc: Process, method: str, **kwargs) -> dict:
    time.sleep(setting['pause'])
    return proc(method, **kwargs)

  # Round 0, untimed, lets each process's heap grow to what the calls hold at most.
  for round_ in range(setting['rounds'] + 1):
    got = {'torch_matmul': timed(torch_proc, 'matmul', size=size, repeats=5),
           'jax_matmul': timed(jax_proc, 'matmul', size=size, repeats=5)}
    for kind in KINDS:
      got[f'torch_{kind}'] = timed(torch_proc, 'run', kind=kind, steps=steps)
      got[f'mu_jax_{kind}'] = timed(jax_proc, 'run', kind=kind, steps=steps)
      if kind in BOUND_KINDS:
        got[f'bound_{kind}'] = timed(bound, 'run', kind=kind, steps=steps)
    got['sharded_train'] = timed(sharded, 'run', kind='train', steps=steps)
    for key, out in got.items() if round_ else ():
      calls[key].append(out)
  return calls


def matmul_params(s: dict) -> int:
  """Parameters that multiply activations: every kernel and the head (not the
  embedding table, a lookup, nor the norm scales)."""
  d = s['d_model']
  return s['num_layers'] * (4 * d * d + 3 * d * s['d_ff']) + d * s['vocab']


def step_flops(kind: str, s: dict) -> float:
  """Model FLOPs of one step: per token and forward pass 2·N + 4·layers·d·T (PaLM,
  Chowdhery et al. 2022, app. B: N the multiplying parameters, T the context, full
  T×T attention), times the forwards of the kind (a backward is two)."""
  per_token = 2 * matmul_params(s) + 4 * s['num_layers'] * s['d_model'] * s['context']
  return FORWARDS[kind] * per_token * s['batch'] * s['context']


def summary(s: dict, calls: dict) -> dict:
  """Per kind: both sides' tokens/s and MFU, the ratio's median and range; the peaks;
  the sharded step's tokens/s; tokens/s and MFU of the steps under `stand_ins` (their
  MFU counts the whole model's FLOPs)."""
  tokens = s['batch'] * s['context'] * s['steps']
  peaks = {side: max(c['gflops'] for c in calls[f'{side}_matmul']) for side in ('jax', 'torch')}
  rows = []
  for kind in KINDS:
    theirs, ours = calls[f'torch_{kind}'], calls[f'mu_jax_{kind}']
    ratios = [t['seconds'] / o['seconds'] for t, o in zip(theirs, ours)]
    seconds = {'torch': statistics.median(t['seconds'] for t in theirs),
               'mu_jax': statistics.median(o['seconds'] for o in ours)}
    gflop = step_flops(kind, s) * s['steps'] / 1e9
    loads = [c['load'] for c in theirs + ours]
    rows.append({'kind': kind, 'torch_tokens_per_s': tokens / seconds['torch'],
                 'mu_jax_tokens_per_s': tokens / seconds['mu_jax'],
                 'ratio_median': statistics.median(ratios), 'ratio_min': min(ratios),
                 'ratio_max': max(ratios),
                 'torch_mfu': gflop / seconds['torch'] / peaks['torch'],
                 'mu_jax_mfu': gflop / seconds['mu_jax'] / peaks['jax'],
                 'load_min': min(loads), 'load_max': max(loads)})
  sharded = statistics.median(c['seconds'] for c in calls['sharded_train'])
  bounds = []
  for kind in BOUND_KINDS:
    seconds = statistics.median(c['seconds'] for c in calls[f'bound_{kind}'])
    bounds.append({'kind': kind, 'tokens_per_s': tokens / seconds,
                   'mfu': step_flops(kind, s) * s['steps'] / 1e9 / seconds / peaks['jax']})
  return {'rows': rows, 'jax_matmul_gflops': peaks['jax'], 'torch_matmul_gflops': peaks['torch'],
          'sharded_train_tokens_per_s': tokens / sharded, 'bounds': bounds}


# ----------------------------------------------------------------------------- report

def goal_text(kind: str) -> str:
  ratio, mfu = GOALS[kind]
  return f'≥ {ratio:.1f}×' + (f', MFU ≥ {mfu:.0%}' if mfu else '')


def goal_met(row: dict) -> bool:
  ratio, mfu = GOALS[row['kind']]
  return row['ratio_median'] >= ratio and (mfu is None or row['mu_jax_mfu'] >= mfu)


def page(run: dict) -> str:
  """The Markdown page of a run (its JSON)."""
  s, a, p, t = run['setting'], run['agreement'], run['provenance'], run['torch']
  host, summ = p['machine'], run['summary']
  packages = p['packages']
  fmt = lambda values: ', '.join(f'{v:.6g}' for v in values)
  lines = [
      '# LM steps against Hugging Face transformers', '',
      f'Generated by `benchmarks/lm_perf.py` from its run '
      f'[{run["json_name"]}](benchmarks/{run["json_name"]}); remake both with', '',
      '```bash',
      f"pip install -c constraints.txt -e '.[compare]' transformers=={t['transformers']}",
      f'python benchmarks/lm_perf.py --out=docs/benchmarks/{run["json_name"]} '
      '--page=docs/lm_performance.md',
      '```', '',
      f'Machine: {host["cpu"]}, {host["cores"]} cores, {host["memory_gib"]} GiB; load average '
      f'{", ".join(str(x) for x in host["load_average"])} at the start; jax {packages["jax"]}, '
      f'flax {packages["flax"]}, optax {packages["optax"]}, torch {t["torch"]} '
      f'({t["threads"]} threads), transformers {t["transformers"]}; mu_jax '
      f'{p["git_commit"] or "unknown"}.',
      f'Setting: transformer d {s["d_model"]}, {s["num_layers"]} layers, {s["num_heads"]} heads, '
      f'd_ff {s["d_ff"]}, vocabulary {s["vocab"]:,} ({matmul_params(s):,} multiplying '
      f'parameters); one batch of {s["batch"]} random rows × {s["context"]} tokens, all scored '
      f'but the first; AdamW lr {s["learning_rate"]:g}, weight decay {s["weight_decay"]:g}; NPO β '
      f'{s["beta"]:g}; {s["steps"]} steps per call, {s["rounds"]} rounds.',
      *([] if not s.get('reuse_freed_memory') else [
          "mu_jax's processes keep XLA:CPU's per-step temporaries mapped "
          '(`mu_jax.host_memory`, as the `mu-jax` command does); the torch process runs '
          "with glibc's defaults, as a transformers user's does."]),
      '', '## Agreement with transformers (same weights, same batch)', '',
      '| check | mu_jax | transformers | max abs difference |', '|---|---|---|---|',
      f'| logits, first {AGREEMENT_ROWS} rows | | | {a["logits_max_abs_diff"]:.2e} |']
  for kind in KINDS[:3]:
    lines.append(f'| {NAMES[kind]}: losses of steps 1, 2 | {fmt(a[kind]["mu_jax"])} | '
                 f'{fmt(a[kind]["torch"])} | {a[kind]["max_abs_diff"]:.2e} |')
  ours, theirs = a['evaluate']['mu_jax'][0], a['evaluate']['torch'][0]
  lines += [
      f'| {NAMES["evaluate"]}: per-sequence NLL sums, mean | {np.mean(ours):.6g} | '
      f'{np.mean(theirs):.6g} | {a["evaluate"]["max_abs_diff"]:.2e} |',
      '', '## Time, side by side', '',
      f'Both sides in their own processes, called in alternation, {s["steps"]} steps per call '
      'after a warm-up (one step of each kind, then one untimed round), each call after '
      f'{s["pause"]:g} s of idle machine; tokens/s of the median call; ratio = torch '
      'seconds / mu_jax seconds of adjacent calls (> 1: mu_jax faster), median and range '
      'over the rounds; MFU = '
      'model FLOPs per second / the same side\'s float32 matmul peak below, model FLOPs per '
      'token and forward pass 2·N + 4·layers·d·T (PaLM, app. B; N multiplying parameters, T '
      'the context), 3 forwards for a training or ascent step, 4 for NPO (with the reference\'s '
      'forward), 1 for evaluation; load = the 1-minute load average after the calls.', '',
      '| step | transformers tokens/s | mu_jax tokens/s | ratio (median) | range | '
      'mu_jax MFU | transformers MFU | load | goal | met |',
      '|---|---|---|---|---|---|---|---|---|---|']
  for r in summ['rows']:
    lines.append(
        f'| {NAMES[r["kind"]]} | {r["torch_tokens_per_s"]:,.0f} | {r["mu_jax_tokens_per_s"]:,.0f} '
        f'| {r["ratio_median"]:.2f}× | {r["ratio_min"]:.2f}–{r["ratio_max"]:.2f} | '
        f'{r["mu_jax_mfu"]:.1%} | {r["torch_mfu"]:.1%} | {r["load_min"]:.1f}–{r["load_max"]:.1f} '
        f'| {goal_text(r["kind"])} | {"yes" if goal_met(r) else "no"} |')
  rows = {r['kind']: r for r in summ['rows']}
  lines += [
      '', f'Float32 matmul peak ({s["matmul"]} × {s["matmul"]} matrices, best of the rounds): '
      f'JAX {summ["jax_matmul_gflops"]:.1f} GFLOP/s, torch {summ["torch_matmul_gflops"]:.1f} '
      'GFLOP/s.',
      '', '## mu_jax training step on fake devices', '',
      '| devices | mesh | tokens/s |', '|---|---|---|',
      f'| 1 | data:1 | {rows["train"]["mu_jax_tokens_per_s"]:,.0f} |',
      f'| {s["devices"]} | {s["sharded_mesh"]} | {summ["sharded_train_tokens_per_s"]:,.0f} |',
      '', f'The {s["devices"]} fake devices share the machine\'s {host["cores"]} cores: this '
      'row shows that the sharded step runs, not a speed-up.',
      '', '## What a faster attention or loss could gain', '',
      'A third mu_jax process runs the training and gradient ascent steps, timed in the '
      'same rounds, with the attention core (score and value products, mask, softmax) and '
      'the loss\'s log-softmax replaced by elementwise stand-ins that keep every other op '
      'and its gradient (`lm_perf.stand_ins`). Its MFU counts the whole model\'s FLOPs: it '
      'is what the step would reach if attention and the softmax cost nothing and the rest '
      'ran as XLA compiles it now.', '',
      '| step | mu_jax tokens/s | mu_jax MFU | without attention and softmax: tokens/s | '
      'MFU |', '|---|---|---|---|---|']
  for b in summ['bounds']:
    r = rows[b['kind']]
    lines.append(f'| {NAMES[b["kind"]]} | {r["mu_jax_tokens_per_s"]:,.0f} | '
                 f'{r["mu_jax_mfu"]:.1%} | {b["tokens_per_s"]:,.0f} | {b["mfu"]:.1%} |')
  lines.append('')
  return '\n'.join(lines)


def remake(json_path: str, page_path: str | None) -> None:
  """Writes the page of the run at `json_path` to `page_path` (stdout when None)."""
  with open(json_path, encoding='utf-8') as f:
    run = json.load(f)
  with open(page_path or '/dev/stdout', 'w', encoding='utf-8') as f:
    f.write(page(run))


def main(argv):
  del argv
  if FLAGS.from_json:
    remake(FLAGS.from_json, FLAGS.page)
    return
  import hf_side
  from mu_jax.experiments import runs
  started, setting = time.time(), setting_of(FLAGS)
  with tempfile.TemporaryDirectory(prefix='lm_perf.') as directory:
    data_path = prepare(setting, directory)
    torch_proc = Process(hf_side.serve, data_path, setting['threads'])
    agreed = agreement(data_path, torch_proc)
    print(json.dumps(agreed, indent=1))
    jax_proc = Process(serve_jax, data_path, 'data:1', FLAGS.reuse_freed_memory)
    sharded = with_devices(setting['devices'], serve_jax, data_path, setting['sharded_mesh'],
                           FLAGS.reuse_freed_memory)
    assert sharded.hello['devices'] == setting['devices'], sharded.hello
    bound = Process(serve_jax, data_path, 'data:1', FLAGS.reuse_freed_memory, True)
    calls = rounds(setting, torch_proc, jax_proc, sharded, bound)
    for proc in (torch_proc, jax_proc, sharded, bound):
      proc.close()
  run = {'provenance': runs.provenance(started), 'torch': torch_proc.hello,
         'setting': {**setting, 'reuse_freed_memory': jax_proc.hello['reuse_freed_memory']},
         'agreement': agreed, 'calls': calls, 'summary': summary(setting, calls),
         'json_name': os.path.basename(FLAGS.out or 'lm_perf.json')}
  outputs.write(run, page(run), FLAGS.out, FLAGS.page)


if __name__ == '__main__':
  define_flags()
  app.run(main)
