"""Flax models by name, each as a `Model` of pure functions.

Every model is a `Network`: a backbone that maps float32 inputs (NHWC
images, or feature rows) to features [N, D], and one Dense layer named 'head'
that maps them to the outputs (a classifier's logits, a regressor's
predictions). So `variables['params']['head']` is always the last layer, and
`variables['params']['backbone']` everything before it, which the
frozen-backbone methods (analytic heads, last-layer fine-tuning) rely on.
What the outputs mean is the task's business (`mu_jax.tasks`).
A model trained elsewhere is named by its import path instead
('package.module:ClassName', see `mu_jax.models.external`).
"""
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mu_jax.models import cnn
from mu_jax.models import external
from mu_jax.models import mlp
from mu_jax.models import resnet
from mu_jax.models import transformer
from mu_jax.registry import Registry

Variables = dict[str, Any]


class Model(NamedTuple):
  """A network as pure functions over a variables pytree.

  init(rng, sample_x) -> variables {'params': ..., ['batch_stats': ...]}.
  apply(variables, x, train) -> (float32 outputs [N, C], new_model_state):
    new_model_state is {'batch_stats': ...} for a model with BatchNorm when
    train is True, else {}.
  penultimate(variables, x) -> eval-mode float32 features [N, D], the input
    of the 'head' Dense layer; None when the model does not expose them (then
    the task has no linear head for the methods that need one).
  activations(variables, x, train) -> (outputs, new_model_state, [a_l]): apply
    plus the outputs a_l of the backbone's direct sub-modules (its layers or
    blocks), for methods that align layer activations (Blindspot); None when
    the model does not expose them.
  embedded(variables, x, train, corrupt) -> (outputs, new_model_state): apply
    with the input token embeddings [N, L, D] replaced by corrupt(embeddings),
    for methods that edit prompts in embedding space (ECO); None when the
    model does not expose them.
  """
  name: str
  init: Callable[[jax.Array, jax.Array], Variables]
  apply: Callable[[Variables, jax.Array, bool], tuple[jax.Array, Variables]]
  penultimate: Callable[[Variables, jax.Array], jax.Array] | None
  activations: Callable | None = None
  embedded: Callable | None = None


MODELS: Registry[Callable[..., Model]] = Registry('model')


def vmap_is_slow(tree, stacked: bool = False) -> bool:
  """True for a convolutional model (a kernel of ≥ 4 dims, 5 when `stacked`
  over members) on XLA:CPU, which lowers a convolution vmapped over kernels
  (ensemble members, per-example gradients) to a grouped convolution far
  below its matmul speed; callers then loop over members or rows instead."""
  rank = 5 if stacked else 4
  return (jax.default_backend() == 'cpu' and
          any(leaf.ndim >= rank for leaf in jax.tree.leaves(tree)))


class Network(nn.Module):
  """A backbone (x, train) -> features, then a float32 Dense 'head' of `outputs` units."""
  backbone: nn.Module
  outputs: int

  def setup(self):
    self.head = nn.Dense(self.outputs)

  def features(self, x: jax.Array, train: bool) -> jax.Array:
    return self.backbone(x, train).astype(jnp.float32)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.head(self.features(x, train))


def as_model(name: str, module: Network) -> Model:
  """Wraps a Network into the pure init/apply/penultimate functions.

  None is jitted here: callers jit (or vmap) the step that uses them, and
  eager calls reuse JAX's per-operation caches across model instances.
  """

  def init(rng, sample_x):
    return module.init(rng, sample_x, False)

  def apply(variables, x, train):
    if not train:
      return module.apply(variables, x, False), {}
    # Only BatchNorm models have a 'batch_stats' collection; others give {}.
    logits, state = module.apply(variables, x, True, mutable=['batch_stats'])
    return logits, dict(state)

  def penultimate(variables, x):
    return module.apply(variables, x, False, method=Network.features)

  def activations(variables, x, train):
    mutable = ['intermediates', 'batch_stats'] if train else ['intermediates']
    outputs, state = module.apply(variables, x, train, mutable=mutable,
                                  capture_intermediates=_backbone_layer)
    state = dict(state)
    taps = jax.tree.leaves(state.pop('intermediates'))
    return outputs, state if train else {}, taps

  return Model(name, init, apply, penultimate, activations)


def _backbone_layer(module: nn.Module, method_name: str) -> bool:
  """Captures the outputs of the backbone's direct sub-modules."""
  path = module.scope.path
  return method_name == '__call__' and len(path) == 2 and path[0] == 'backbone'


@MODELS.register('mlp')
def _mlp(outputs: int, hidden: tuple[int, ...] = (256, 256)) -> Model:
  return as_model('mlp', Network(mlp.MLP(tuple(hidden)), outputs))


@MODELS.register('cnn')
def _cnn(outputs: int) -> Model:
  return as_model('cnn', Network(cnn.CNN(), outputs))


@MODELS.register('resnet18')
def _resnet18(outputs: int, width: int = 64,
              dtype: Any = jnp.float32) -> Model:
  backbone = resnet.ResNet18(width=width, dtype=jnp.dtype(dtype))
  return as_model('resnet18', Network(backbone, outputs))


@MODELS.register('transformer')
def _transformer(outputs: int, size: str = 'small', d_model: int | None = None,
                 num_layers: int | None = None, num_heads: int | None = None,
                 d_ff: int | None = None, max_len: int | None = None,
                 tied_embeddings: bool | None = None, dtype: str | None = None,
                 rope_base: float | None = None) -> Model:
  """A decoder-only language model over `outputs` token ids (`mu_jax.models.transformer`):
  the preset `size`, with any field given here overriding it."""
  given = dict(d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_ff=d_ff,
               max_len=max_len, tied_embeddings=tied_embeddings, dtype=dtype,
               rope_base=rope_base)
  cfg = transformer.make_config(outputs, size, **{k: v for k, v in given.items()
                                                  if v is not None})
  return Model('transformer', *transformer.model_functions(cfg))


def create_model(name: str, outputs: int, **kwargs) -> Model:
  """The registered model `name`, or the Flax module class at the import path
  'package.module:ClassName', with `outputs` head units; an unknown name lists
  the valid ones."""
  if external.is_import_path(name):
    return Model(name, *external.model_functions(name, outputs, **kwargs))
  return MODELS.get(name)(outputs=outputs, **kwargs)


def split_variables(variables: Variables) -> tuple[Any, Variables]:
  """(params, model_state), model_state being all but 'params' ({} if none)."""
  state = {k: v for k, v in variables.items() if k != 'params'}
  return variables['params'], state


def merge_variables(params: Any, model_state: Variables) -> Variables:
  """The inverse of split_variables."""
  return {'params': params, **model_state}
