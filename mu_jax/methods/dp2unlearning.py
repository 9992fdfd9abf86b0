"""DP2Unlearning (Al Mahmud et al., "DP2Unlearning: An Efficient and Guaranteed Unlearning
Framework for LLMs", 2025; official code github.com/tamimalmahmud/DP2Unlearning).

Unlearning paid for at training time: the model that may later have to forget is first
trained with DP-SGD on the data that may be forgotten (ε-DP bounds what any one example
can leave in it), and that private checkpoint is kept. A request is then served by
fine-tuning the private checkpoint on the retain data only, non-privately: the forgotten
rows reach the result only through the ε-DP checkpoint, so the guarantee holds at the cost
of a fine-tune instead of a retraining from scratch.

The method is that fine-tune; it starts from the private checkpoint (`Method.start` =
PRIVATE), which the benchmark that runs it trains with DP-SGD (`mu_jax.train`, a recipe
with `dp_epsilon`) and caches like its other models. Its defaults are the official
retain fine-tune (`finetune.py` through the Hugging Face Trainer, as TOFU's: AdamW, the
linear schedule with one epoch of warm-up, no decay on norms), 5 epochs at 5e-5 with
weight decay 0.01 (the official `FM_RT_BM_dp_*_on_retain90_epoch_5_lr_5e-05_wd_0.01`
checkpoints); batch 32 is TOFU's fine-tuning batch (16 × 2 GPUs).
"""
from mu_jax.methods.base import PRIVATE, Method, Stream
from mu_jax.methods.baselines import fine_tune_loss
from mu_jax.methods.gradient import gradient_method
from mu_jax.optim import decayed_weights


def dp2unlearning(*, learning_rate: float = 5e-5,   # official retain fine-tune: lr 5e-05
                  epochs: int = 5,                  # official retain fine-tune: epoch_5
                  batch_size: int = 32,             # TOFU config/finetune.yaml: 16 x 2 GPUs
                  weight_decay: float = 0.01,       # official retain fine-tune: wd 0.01
                  warmup_epochs: int = 1) -> Method:   # TOFU finetune.py: max_steps // epochs
  """Fine-tunes the DP-SGD-trained checkpoint on the retain set only."""
  return gradient_method(fine_tune_loss, stream=Stream('retain', epochs, batch_size),
                         learning_rate=learning_rate, optimizer='adamw',
                         weight_decay=weight_decay, decay_mask=decayed_weights,
                         schedule='linear', warmup_epochs=warmup_epochs)._replace(start=PRIVATE)
