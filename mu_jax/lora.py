"""Low-rank adapters (LoRA; Hu et al., ICLR 2022, arXiv:2106.09685) as a pure pytree transformation.

For each targeted kernel W [in, out] (a Dense kernel whose module name is in
`targets`, e.g. the transformer's 'q', 'v', 'gate'), the adapters hold
a [in, r] and b [r, out], and the model runs with

  W' = W + (α / r) · a @ b

(`merge`). Only the adapters train; W stays as it was, bit for bit. The
initialisation is Hugging Face PEFT's (`init_lora_weights=True`): a ~
U(−1/√in, 1/√in), the bound of torch's kaiming_uniform_(a=√5), and b = 0, so
the merged model starts equal to the original. Another initialisation (FILA's
Fisher-weighted one, `mu_jax.methods.ihl`) registers itself in `INITS`; it
may also return new frozen weights (W minus its initial product), so the
merged model still starts where the original was.

Any method built on `gradient_method` trains adapters instead of all weights
when built inside a `low_rank(spec)` block; `mu_jax.methods.create_method`
opens that block for the hyper-parameters `lora_rank` > 0, `lora_alpha`,
`lora_targets` and `lora_init` (`DEFAULTS`).
"""
import contextlib
import contextvars
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from mu_jax.errors import MuJaxError

# The hyper-parameters every gradient method gains (`mu_jax.methods.method_defaults`).
DEFAULTS = {
    'lora_rank': 0,            # 0: train all weights; r > 0: train rank-r adapters only
    'lora_alpha': 8.0,         # PEFT LoraConfig: lora_alpha = 8
    'lora_targets': 'q,v',     # PEFT's Llama default target_modules: q_proj, v_proj
    'lora_init': 'peft',       # 'peft' (b = 0) or 'fila' (Fisher-weighted, mu_jax.methods.ihl)
}


class LoraSpec(NamedTuple):
  rank: int
  alpha: float
  targets: tuple[str, ...]
  init: str = 'peft'

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


# init(ctx, variables, spec, rng) -> (frozen params, adapters)
INITS: dict[str, Callable[..., tuple[Any, dict]]] = {}


def spec_of(rank: int, alpha: float, targets: str, init: str) -> LoraSpec:
  """A checked LoraSpec from the `lora_*` hyper-parameters."""
  names = tuple(t.strip() for t in targets.split(',') if t.strip())
  if not isinstance(rank, int) or rank < 1:
    raise MuJaxError(f'lora_rank={rank!r} must be a positive integer (0 turns LoRA off).')
  if alpha <= 0:
    raise MuJaxError(f'lora_alpha={alpha} must be > 0.')
  if not names:
    raise MuJaxError('lora_targets is empty; name the modules to adapt, e.g. "q,v".')
  if init not in ('peft', 'fila'):
    raise MuJaxError(f"Unknown LoRA initialisation lora_init={init!r}; valid: fila, peft.")
  return LoraSpec(rank, float(alpha), names, init)


def targeted(params: dict, spec: LoraSpec) -> list[tuple[str, ...]]:
  """Paths of the 2-D kernels of modules named in `spec.targets`; refuses none, or a rank
  above a kernel's smaller side."""
  flat = traverse_util.flatten_dict(params)
  paths = [p for p, w in flat.items()
           if p[-1] == 'kernel' and len(p) > 1 and p[-2] in spec.targets and w.ndim == 2]
  if not paths:
    modules = sorted({p[-2] for p, w in flat.items() if p[-1] == 'kernel' and len(p) > 1})
    raise MuJaxError(f'No kernel belongs to a module named in lora_targets='
                     f'{",".join(spec.targets)}; the model\'s modules: {", ".join(modules)}.')
  for p in paths:
    if spec.rank > min(flat[p].shape):
      raise MuJaxError(f'lora_rank={spec.rank} exceeds the smaller side of the kernel '
                       f'{"/".join(p)} {tuple(flat[p].shape)}.')
  return paths


def adapter_tree(pairs: dict[tuple[str, ...], tuple[jax.Array, jax.Array]]) -> dict:
  """Nested adapters {module path: {'a', 'b'}} from {kernel path: (a, b)}."""
  flat = {}
  for path, (a, b) in pairs.items():
    flat[(*path[:-1], 'a')], flat[(*path[:-1], 'b')] = a, b
  return traverse_util.unflatten_dict(flat)


def peft_init(ctx, variables: dict, spec: LoraSpec, rng: jax.Array) -> tuple[Any, dict]:
  """PEFT's initialisation: a ~ U(±1/√in), b = 0; the frozen weights are the originals."""
  del ctx
  params = variables['params']
  flat = traverse_util.flatten_dict(params)
  pairs = {}
  for i, path in enumerate(targeted(params, spec)):
    w = flat[path]
    bound = 1.0 / jnp.sqrt(w.shape[0])
    a = jax.random.uniform(jax.random.fold_in(rng, i), (w.shape[0], spec.rank), w.dtype,
                           -bound, bound)
    pairs[path] = (a, jnp.zeros((spec.rank, w.shape[1]), w.dtype))
  return params, adapter_tree(pairs)


INITS['peft'] = peft_init


def merge(params: dict, adapters: dict, scale: float) -> dict:
  """`params` with every adapted kernel W replaced by W + scale · a @ b."""
  flat = traverse_util.flatten_dict(params)
  pieces = traverse_util.flatten_dict(adapters)
  for path, a in pieces.items():
    if path[-1] == 'a':
      w = flat[(*path[:-1], 'kernel')]
      flat[(*path[:-1], 'kernel')] = w + (scale * (a @ pieces[(*path[:-1], 'b')])).astype(w.dtype)
  return traverse_util.unflatten_dict(flat)


def count(adapters: dict) -> int:
  """Trainable numbers in the adapters."""
  return sum(int(x.size) for x in jax.tree.leaves(adapters))


class Building(NamedTuple):
  spec: LoraSpec | None   # None: only record what is built (`adaptable`)
  built: list             # per gradient method built in the block: True if it can take LoRA


_BUILDING: contextvars.ContextVar[Building | None] = contextvars.ContextVar(
    'lora_building', default=None)


@contextlib.contextmanager
def low_rank(spec: LoraSpec | None) -> Iterator[Building]:
  """Gradient methods built inside this block train `spec`'s adapters only (None: they are
  built as usual; the record still lists them). Construction-time only, as
  `gradient.sharpness_aware`."""
  token = _BUILDING.set(Building(spec, []))
  try:
    yield _BUILDING.get()
  finally:
    _BUILDING.reset(token)


def building(masked: bool) -> LoraSpec | None:
  """Called by `gradient_method` as it is built: records it and returns the active spec.
  A method with its own weight mask (`masked`) cannot also train adapters."""
  record = _BUILDING.get()
  if record is None:
    return None
  record.built.append(not masked)
  if record.spec is not None and masked:
    raise MuJaxError('This method trains a mask of the weights, which LoRA adapters do not '
                     'have; set lora_rank=0.')
  return record.spec
