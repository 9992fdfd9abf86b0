"""Classification: logits [N, C] against integer labels 'y'.

Loss: softmax cross-entropy. Statistics: the loss, the margin
φ = z_y − logsumexp_{k≠y} z_k (clipped to ±MARGIN_CLIP, shared by KLoM,
U-LiRA, the challenge score and, unclipped, TRAK), the true-class confidence
(the MIA's feature), correctness and the softmax entropy. Metrics: FA/UA, RA,
TA and MIA-efficacy; Avg. Gap over UA, RA, TA, MIA.
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import optax

from mu_jax.tasks.base import ACCURACY, CLASS_LABELS, INPUT_RANGE, LINEAR_HEAD, OUTPUT_VECTOR, Task, mean_of

MARGIN_CLIP = 100.0   # data-unlearning-bench `kl_from_margins` clip_min/clip_max ±100


def margin(logits: jax.Array, labels: jax.Array, clip: float | None = MARGIN_CLIP) -> jax.Array:
  """φ = z_y − logsumexp_{k≠y} z_k; logits [..., N, C], labels [N]; clipped to ±clip."""
  true = labels[:, None] == jnp.arange(logits.shape[-1])
  index = jnp.broadcast_to(labels[:, None], (*logits.shape[:-1], 1))
  z_y = jnp.take_along_axis(logits, index, -1)[..., 0]
  phi = z_y - jax.nn.logsumexp(jnp.where(true, -jnp.inf, logits), -1)
  return phi if clip is None else jnp.clip(phi, -clip, clip)


def entropy(logits: jax.Array) -> jax.Array:
  """Shannon entropy −Σ p log p (nats) of softmax(logits) over the last axis."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  return -jnp.sum(jnp.exp(log_p) * log_p, -1)


def true_class_log_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log softmax(logits)_y per row."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """Images (or any inputs) 'x' with integer labels 'y' in [0, num_classes)."""
  num_classes: int = 2

  name = 'classification'
  capabilities = frozenset({CLASS_LABELS, LINEAR_HEAD, INPUT_RANGE, OUTPUT_VECTOR, ACCURACY})
  keys = ('x', 'y')
  metric_columns = {'FA': ('forget', 'accuracy'), 'RA': ('retain', 'accuracy'),
                    'TA': ('test', 'accuracy')}
  table_metrics = ('UA', 'RA', 'TA', 'MIA')
  gap_metrics = ('UA', 'RA', 'TA', 'MIA')   # Avg. Gap as in the SalUn paper
  mia_statistic = 'confidence'
  evaluators = {'accuracy': mean_of('correct', 100.0)}

  @classmethod
  def create(cls, model, input_shape, outputs):
    return cls(model, input_shape, num_classes=outputs)

  def losses(self, outputs, batch):
    chex.assert_rank(outputs, 2)                  # logits [N, classes]
    chex.assert_type(batch['y'], int)             # integer labels
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32),
                                                           batch['y'])

  def statistics(self, outputs, batch):
    logits = outputs.astype(jnp.float32)
    y = batch['y']
    probs = jax.nn.softmax(logits, -1)
    return {'loss': self.losses(logits, batch), 'margin': margin(logits, y),
            'confidence': jnp.take_along_axis(probs, y[:, None], -1)[:, 0],
            'correct': (jnp.argmax(logits, -1) == y).astype(jnp.float32),
            'entropy': entropy(logits)}

  def head_targets(self, batch):
    return jax.nn.one_hot(batch['y'], self.num_classes, dtype=jnp.float32)

  def summarize(self, stats, *, seed, mia_max_per_side, mia_members='sample'):
    out = super().summarize(stats, seed=seed, mia_max_per_side=mia_max_per_side,
                            mia_members=mia_members)
    return {'FA': out['FA'], 'UA': 100.0 - out['FA'], **out}
