"""The first baselines: fine-tuning (ft), gradient ascent (ga), random labels (rl), and
gradient difference (grad_diff, the LLM-unlearning baseline: ga plus retain loss).

Defaults are the CIFAR-10 / ResNet-18 settings of the Unlearn-Sparse and
SalUn reference scripts (Jia et al. 2023, arXiv:2304.04934; Fan et al. 2024,
arXiv:2310.12508): SGD, momentum 0.9, weight decay 5e-4, batch 256.
"""
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, retain_nll
from mu_jax.optim import decayed_weights
from mu_jax.tasks import CLASS_LABELS

MOMENTUM = 0.9        # Unlearn-Sparse `arg_parser.py` --momentum
WEIGHT_DECAY = 5e-4   # Unlearn-Sparse `arg_parser.py` --weight_decay
BATCH_SIZE = 256      # Unlearn-Sparse `arg_parser.py` --batch_size


def fine_tune_loss(task, variables, batch, rng):
  """The task's loss on retain batches: catastrophic forgetting of D_f."""
  del rng
  outputs, new_state = task.apply(variables, batch, True)
  return task.mean_loss(outputs, batch), new_state


def gradient_ascent_loss(task, variables, batch, rng):
  """The task's loss, negated, on forget batches."""
  del rng
  outputs, new_state = task.apply(variables, batch, True)
  return -task.mean_loss(outputs, batch), new_state


def other_labels(rng: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """A uniformly random label different from each true label."""
  shift = jax.random.randint(rng, labels.shape, 1, num_classes)
  return (labels + shift) % num_classes


ORDERS = ('sequential', 'mixed')


LABEL_DRAWS = ('other', 'any')


def draw_labels(draw: str, rng: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Random labels for `labels`' rows: 'other' (never the truth) or 'any' (uniform)."""
  if draw == 'other':
    return other_labels(rng, labels, num_classes)
  return jax.random.randint(rng, labels.shape, 0, num_classes, labels.dtype)


def random_label_loss(draw: str) -> Callable:
  """Cross-entropy on batches whose forget rows (flag 'f') carry a random label.

  Every forget row is seen once per epoch and its label is drawn at that step,
  as the reference's CIFAR-10 branch draws per batch (Unlearn-Saliency
  Classification/unlearn/RL.py:125; its CIFAR-100 branch draws once per
  epoch, the same distribution). `draw`: 'other' draws uniformly among the
  labels other than the truth (y' != y), so every forget row is pushed off
  its label (mu_jax's default); 'any' draws uniformly among all classes, as
  the reference's `torch.randint(0, num_classes)` (RL.py:125), which keeps the
  true label for 1/C of the rows.
  """
  if draw not in LABEL_DRAWS:
    raise MuJaxError(f'Unknown random-label draw labels={draw!r}; valid: {", ".join(LABEL_DRAWS)}.')

  def loss(task, variables, batch, rng):
    logits, new_state = task.apply(variables, batch, True)
    labels = jnp.where(batch['f'] > 0, draw_labels(draw, rng, batch['y'], task.num_classes),
                       batch['y'])
    return task.mean_loss(logits, {**batch, 'y': labels}), new_state

  return loss


def random_label_batches(order: str, batch_size: int) -> Callable[[Context, int], Iterator[dict]]:
  """The batches of one random-label epoch (`Method.batches`), flag 'f' on forget rows.

  'sequential': a shuffled pass over D_f, then a shuffled pass over D_r, as
  the reference's CIFAR-10/SVHN branch (Unlearn-Saliency
  Classification/unlearn/RL.py:109-159), whose learning rate and epochs the
  defaults use. 'mixed': one shuffled pass over D_f ∪ D_r, as its
  CIFAR-100/TinyImageNet branch (RL.py:51-59).
  """
  if order not in ORDERS:
    raise MuJaxError(f'Unknown random-label order order={order!r}; valid: {", ".join(ORDERS)}.')

  def batches(ctx: Context, epoch: int) -> Iterator[dict]:
    if order == 'mixed':
      yield from ctx.batches('union', batch_size, epoch=epoch)
      return
    for rows, flag in ((ctx.forget, 1.0), (ctx.retain, 0.0)):
      f = np.full(len(rows), flag, np.float32)
      yield from ctx.batches_of({**rows.arrays(), 'f': f}, batch_size, epoch=epoch)

  return batches


def ft(*, learning_rate: float = 0.01,   # Unlearn-Sparse FT script: --unlearn_lr 0.01
       epochs: int = 10,                 # Unlearn-Sparse FT script: --unlearn_epochs 10
       batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
       weight_decay: float = WEIGHT_DECAY) -> Method:
  """Fine-tunes on the retain set only."""
  return gradient_method(fine_tune_loss, stream=Stream('retain', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay)


def ga(*, learning_rate: float = 1e-4,   # Unlearn-Sparse GA script: --unlearn_lr 0.0001
       epochs: int = 5,                  # Unlearn-Sparse GA script: --unlearn_epochs 5
       batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
       weight_decay: float = WEIGHT_DECAY) -> Method:
  """Ascends the loss on the forget set only."""
  return gradient_method(gradient_ascent_loss, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay)


def rl(*, learning_rate: float = 0.013,  # SalUn README (RL, CIFAR-10 10%): --unlearn_lr 0.013
       epochs: int = 10,                 # SalUn README: --unlearn_epochs 10
       batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
       weight_decay: float = WEIGHT_DECAY,
       order: str = 'sequential',  # RL.py:109-159, the CIFAR-10 branch of the defaults
       labels: str = 'other') -> Method:  # y' != y; 'any': the reference's draw, RL.py:125
  """Trains on D_f relabelled at random (`labels`: LABEL_DRAWS) and on D_r, in `order` (ORDERS)."""
  batches = random_label_batches(order, batch_size)
  return gradient_method(random_label_loss(labels), stream=Stream('union', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay)._replace(batches=batches,
                                                             requires=(CLASS_LABELS,))


def grad_diff(*, learning_rate: float = 1e-5,   # open-unlearning tofu/default.yaml: 1e-5
              epochs: int = 10,                 # open-unlearning tofu/default.yaml: 10 epochs
              batch_size: int = 32,             # open-unlearning tofu_unlearn.sh: 4 x 4 x 2 GPUs
              forget_weight: float = 1.0,       # open-unlearning GradDiff.yaml: gamma 1.0
              retain_weight: float = 1.0,       # open-unlearning GradDiff.yaml: alpha 1.0
              weight_decay: float = 0.01,       # open-unlearning tofu/default.yaml: 0.01
              warmup_epochs: int = 1) -> Method:   # open-unlearning tofu/default.yaml: 1.0
  """Gradient difference (open-unlearning `GradDiff`): γ·(−loss on D_f) + α·loss on D_r.

  Each forget row is paired with a random retain row (`paired`); AdamW without decay
  on norms, the HF linear schedule, as its TOFU trainer runs.
  """

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    outputs, model_state = task.apply(variables, batch, True)
    forget = -forget_weight * task.mean_loss(outputs, batch)
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  return gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, optimizer='adamw',
                         weight_decay=weight_decay,
                         make_aux=aux_maker(reference=False, retain=True),
                         decay_mask=decayed_weights, schedule='linear',
                         warmup_epochs=warmup_epochs)
