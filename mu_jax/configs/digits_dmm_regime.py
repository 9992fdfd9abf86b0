"""DMM where its paper says it works: small random and coherent forget sets, KLoM over many models.

  mu-jax rigorous --config=mu_jax.configs.digits_dmm_regime --workdir=runs/dmm-regime
  mu-jax rigorous --config=mu_jax.configs.digits_dmm_regime:forget=cluster:0:0.05 \
      --workdir=runs/dmm-regime
  mu-jax rigorous --config=mu_jax.configs.digits_dmm_regime:forget=random:0.05,methods=dmm \
      --config.unlearn.dmm.num_models=1024 --workdir=runs/dmm-regime

dmm trains its 256-member datamodel ensemble once per unlearned model, so the
full size (64 x 256 trainings of 30 epochs) takes minutes on a GPU and hours
on a 2-core CPU; `smoke=True` shrinks everything for a test.

Georgiev et al. 2024 (arXiv:2410.23232) report DMM's KLoM close to the oracle's
for random and non-random forget sets of up to ~2% of CIFAR-10, not for whole
classes. This config is that regime on digits (configs/digits_mlp.py's model,
data and recipes): a 5% random forget set or a coherent sub-cluster of one
class (`cluster:<k>:<fraction>`, mu_jax/data/forget.py), N originals and N
oracles per side, and DMM beside the baselines the paper compares with.
`arg` takes digits_rigorous's keys (forget, methods, num_models, ...).
"""
import os

from mu_jax.experiments import config_lib, rigorous

NUM_MODELS = 64        # KLoM models per side; reference: N=100 (data-unlearning-bench
                       # unlearning_bench/config.py, cifar_params "N"); 64: the minimum
FORGET = 'random:0.05'
# The paper's comparison (ascent/descent, SCRUB, oracle matching) with this
# library's names; salun is the field's saliency baseline.
METHODS = 'ft,ga,scrub,salun,oracle_matching,dmm'
DMM_MODELS = 256       # datamodel ensemble; Ilyas et al. 2022 Table 1 fit CIFAR-10 on
                       # 300,000 models at α = 0.5: here ~0.2 models per training row
DMM_EPOCHS = 30        # the originals' recipe (digits_mlp.py: 30 epochs), so the datamodels
                       # describe the training being undone (dmm's default 10 is for cost)


def _smoke(c):
  c.rigorous.num_models = 4
  c.rigorous.plots = False
  c.unlearn.dmm.num_models = 8
  c.unlearn.dmm.ensemble_epochs = 1
  c.unlearn.oracle_matching.num_models = 2
  c.unlearn.oracle_matching.ensemble_epochs = 1
  for name in ('ft', 'ga', 'salun'):
    c.unlearn[name].epochs = 1


def get_config(arg=None):
  values = config_lib.parse_arg(arg, extra_keys=rigorous.ARG_KEYS)
  values.setdefault('forget', FORGET)
  if 'method' not in values:
    values.setdefault('methods', METHODS.replace(',', '+'))
  c = rigorous.make_config(os.path.join(os.path.dirname(__file__), 'digits_mlp.py'),
                           ','.join(f'{k}={v}' for k, v in values.items()), smoke=_smoke)
  with c.unlocked():
    c.rigorous.relearn.max_steps = 0   # the claim is about KLoM; relearning is not scored
    if not c.smoke:
      if 'num_models' not in values:
        c.rigorous.num_models = NUM_MODELS
      c.unlearn.dmm.num_models = DMM_MODELS
      c.unlearn.dmm.ensemble_epochs = DMM_EPOCHS
  return c
