"""Rigorous evaluation on digits: 32 originals, 32 oracles and 32 unlearned models per method.

  python experiments/rigorous.py --config=configs/digits_rigorous.py
  python experiments/rigorous.py --config=configs/digits_rigorous.py:forget=random:0.1
  python experiments/rigorous.py --config=configs/digits_rigorous.py:setting=worst_case
  python experiments/rigorous.py --config=configs/digits_rigorous.py:setting=corrective
  python experiments/rigorous.py --config=configs/digits_rigorous.py:setting=sequential
  python experiments/rigorous.py --config=configs/digits_rigorous.py:num_models=128

The model, data and recipes are configs/digits_mlp.py's; `arg` also takes
setting=standard|worst_case|sequential|corrective and num_models=N.
"""
import os

from mu_jax.evaluation import rigorous


def _smoke(c):
  c.rigorous.num_models = 4
  c.methods = 'ft,ssd'
  c.rigorous.relearn.max_steps = 10
  c.rigorous.worst_case.select_epochs = 1
  c.rigorous.worst_case.unlearn_steps = 1


def get_config(arg=None):
  c = rigorous.make_config(os.path.join(os.path.dirname(__file__), 'digits_mlp.py'), arg,
                           smoke=_smoke)
  with c.unlocked():
    # Challenging Forgets' w_lr = 0.01 moves w by 0.01·loss per epoch, which cannot
    # lift an unselected row (w = 0) past a selected one (w = 1) when the losses are
    # below ~10, as on digits; 10.0 lets the selection leave its random start.
    c.rigorous.worst_case.w_lr = 10.0
  return c
