"""Rigorous evaluation on a CPU-sized Fashion-MNIST: 32 models per side, an MLP on 6,000 images.

  sudo apt-get install -y dataset-fashion-mnist
  mu-jax rigorous --config=mu_jax.configs.fashion_rigorous
  mu-jax rigorous --config=mu_jax.configs.fashion_rigorous:forget=random:0.1

Data, optimizer (Adam 1e-3, cosine, batch 128, 10 epochs) and unlearning
recipes are configs/fashion_mnist_cnn.py's, with two cuts so that 3 x 32
training runs and every method on 32 models fit a 2-core CPU: a seeded subset
of 6,000 training images (of the 55,000; 2,000 each of validation and test),
and the 784-256-256-10 MLP of the digits benchmark instead of the CNN (the
CNN costs ~16x the MLP's FLOPs per image). The SVC MIA is averaged over the
first 8 members (its fit on 2 x 2,000 confidences is the slow part).
"""
import os

from mu_jax.experiments import rigorous


def _smoke(c):
  c.rigorous.num_models = 4
  c.rigorous.train_size = 1000
  c.rigorous.eval_size = 500
  c.methods = 'ft,ssd'
  c.rigorous.relearn.max_steps = 10


def get_config(arg=None):
  c = rigorous.make_config(os.path.join(os.path.dirname(__file__), 'fashion_mnist_cnn.py'), arg,
                           smoke=_smoke)
  with c.unlocked():
    c.model.name = 'mlp'
    c.model.kwargs.hidden = (256, 256)
    c.train.microbatch = 0   # the CNN's CPU setting; ensembles train whole batches
    if not c.smoke:
      c.rigorous.train_size = 6000
      c.rigorous.eval_size = 2000
      c.rigorous.worst_case.select_epochs = 10   # official arg_parser.py: --select_epochs 10
    c.rigorous.mia_models = 8
    c.rigorous.worst_case.w_lr = 1e4   # see configs/digits_rigorous.py
  return c
