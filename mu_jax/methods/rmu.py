"""Representation misdirection for unlearning (RMU; Li et al., "The WMDP Benchmark", ICML 2024,
arXiv:2403.03218; official code centerforaisafety/wmdp, rmu/unlearn.py).

At one layer ℓ the residual stream of forget text is steered to a fixed random
direction, and that of retain text is held to the frozen model's:

  L = mean (h_ℓ(x_f) − c·u)²  +  α · mean (h_ℓ(x_r) − h_ℓ^frozen(x_r))²

u is a uniform [0, 1)^d draw normalised to unit length, once per run (the
official `torch.rand(1, 1, d)` / its norm), c the steering coefficient. Only
the kernels of `params` modules in the blocks `param_layers` train (the
official `get_params(layer_ids=[5, 6, 7], param_ids=[6])`: each block's MLP
down-projection), with AdamW at a constant rate, one pass over the forget
batches. Each forget batch is paired with random retain rows (`paired`); the
official code walks both corpora in order.

Means: 'all' (the official `F.mse_loss`) averages over every position of the
real rows, padding included, and the features; 'scored' (open-unlearning's
RMU trainer) averages each row's scored positions, then the rows.
"""
import jax
import jax.numpy as jnp
from flax import traverse_util

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, paired_retain
from mu_jax.tasks import TOKENS

POSITIONS = ('all', 'scored')


def activation_mse(h, target, batch: dict, positions: str) -> jax.Array:
  """Mean squared difference of activations h [N, L, d] from `target` over the real rows'
  positions (`positions`: POSITIONS) and the features."""
  per_position = jnp.mean(jnp.square(h - target), -1)   # [N, L]
  if positions == 'scored':
    per_row = jnp.sum(per_position * batch['m'], -1) / jnp.maximum(jnp.sum(batch['m'], -1), 1.0)
  else:
    per_row = jnp.mean(per_position, -1)
  return jnp.sum(per_row * batch['w']) / jnp.maximum(jnp.sum(batch['w']), 1.0)


def control_vector(rng: jax.Array, width: int, coefficient: float) -> jax.Array:
  """c · u/‖u‖ with u ~ U[0, 1)^width."""
  u = jax.random.uniform(rng, (width,))
  return coefficient * u / jnp.linalg.norm(u)


def trainable_mask(params: dict, layers: tuple[int, ...], modules: tuple[str, ...]) -> dict:
  """True on the kernels of `modules` inside the blocks `layers`; refuses a mask that
  selects nothing."""
  flat = traverse_util.flatten_dict(params)
  mask = {path: path[-1] == 'kernel' and len(path) > 1 and path[-2] in modules
          and any(f'block_{i}' in path for i in layers) for path in flat}
  if not any(mask.values()):
    raise MuJaxError(f'RMU trains the {",".join(modules)} kernels of blocks '
                     f'{",".join(map(str, layers))}, and the model has none; set '
                     'param_layers and params to blocks and modules it has.')
  return traverse_util.unflatten_dict(mask)


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(t) for t in text.split(',') if t.strip())


def rmu(*, learning_rate: float = 5e-5,   # wmdp rmu/unlearn.py get_args: --lr 5e-5
        epochs: int = 1,                  # unlearn.py: one pass, ≤ max_num_batches 80
        batch_size: int = 4,              # get_args: --batch_size 4
        layer: int = 7,                   # get_args: --layer_id 7
        param_layers: str = '5,6,7',      # get_args: --layer_ids 5,6,7
        params: str = 'down',             # get_args: --param_ids 6 (mlp.down_proj.weight)
        steering_coeff: float = 20.0,     # get_args: --steering_coeffs 20
        retain_weight: float = 100.0,     # get_args: --alpha 100
        positions: str = 'all') -> Method:   # unlearn.py: F.mse_loss, a mean over everything
  """RMU: forget activations at `layer` steered to a scaled random direction, retain ones kept."""
  if positions not in POSITIONS:
    raise MuJaxError(f'Unknown RMU positions {positions!r}; valid: {", ".join(POSITIONS)}.')
  layers, modules = _ints(param_layers), tuple(m.strip() for m in params.split(',') if m.strip())

  def make_mask(ctx: Context, variables: dict) -> dict:
    blocks = sum(1 for key in variables['params'] if key.startswith('block_'))
    if not 0 <= layer < blocks:
      raise MuJaxError(f'RMU steers layer {layer}, but the model has blocks 0-{blocks - 1}; '
                       'set layer to one of them.')
    return trainable_mask(variables['params'], layers, modules)

  make_aux = aux_maker(reference=True, retain=True)

  def aux_with_vector(ctx: Context, variables: dict) -> dict:
    aux = make_aux(ctx, variables)
    width = jax.eval_shape(lambda: ctx.task.activations(
        variables, jax.tree.map(lambda a: a[:1], ctx.forget.arrays()), False)[2][layer]).shape[-1]
    return {**aux, 'control': control_vector(jax.random.PRNGKey(ctx.seed), width,
                                             steering_coeff)}

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    _, model_state, taps = task.activations(variables, batch, True)
    forget = activation_mse(taps[layer], extra.aux['control'], batch, positions)
    retain_batch = paired_retain(extra, batch, rng)
    kept = task.activations(variables, retain_batch, True)[2][layer]
    frozen = task.activations(extra.aux['ref'], retain_batch, False)[2][layer]
    retain = activation_mse(kept, jax.lax.stop_gradient(frozen), retain_batch, positions)
    return LossTerms(forget, retain_weight * retain), model_state

  method = gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                           # unlearn.py: transformers.AdamW(params, lr) (decay 0, no schedule)
                           learning_rate=learning_rate, optimizer='adamw', weight_decay=0.0,
                           make_mask=make_mask, make_aux=aux_with_vector)
  return method._replace(requires=(TOKENS,))
