"""The PyTorch side of `compare_official.py`: mu_jax's CNN in torch, weights carried
over from Flax, the official SSD code imported from the user's checkout, and a
worker process that runs the timed passes on request.

Layouts: Flax convolutions are HWIO on NHWC inputs, torch's OIHW on NCHW; Flax
flattens the last feature map in (h, w, c) order, torch in (c, h, w), so the
first dense kernel's rows are permuted. `to_torch` and `to_flax` are exact
inverses, and the carried model computes the same logits (checked every run).
"""
import importlib
import os
import sys
import time
import types

import numpy as np
import torch
from torch import nn

import workers

# The official ssd.py imports these at the top for other code in the file;
# ParameterPerturber uses none of them. When one is not installed it is
# replaced by an empty module so that the file imports unchanged.
UNUSED_BY_PERTURBER = ('torchvision', 'wandb', 'seaborn')


class TorchCNN(nn.Module):
  """mu_jax's `cnn` (Conv32-pool-Conv64-pool-Dense128) with its 10-way head, in torch."""

  def __init__(self, channels: int = 1, side: int = 28, classes: int = 10):
    super().__init__()
    self.conv0 = nn.Conv2d(channels, 32, 3, padding=1)
    self.conv1 = nn.Conv2d(32, 64, 3, padding=1)
    self.side = side // 4
    self.dense = nn.Linear(64 * self.side * self.side, 128)
    self.head = nn.Linear(128, classes)

  def forward(self, x):
    x = torch.max_pool2d(torch.relu(self.conv0(x)), 2)
    x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
    return self.head(torch.relu(self.dense(torch.flatten(x, 1))))


# torch name -> (path in mu_jax's params, kind)
LAYOUT = {
    'conv0.weight': (('backbone', 'Conv_0', 'kernel'), 'conv'),
    'conv0.bias': (('backbone', 'Conv_0', 'bias'), 'vector'),
    'conv1.weight': (('backbone', 'Conv_1', 'kernel'), 'conv'),
    'conv1.bias': (('backbone', 'Conv_1', 'bias'), 'vector'),
    'dense.weight': (('backbone', 'Dense_0', 'kernel'), 'flatten_dense'),
    'dense.bias': (('backbone', 'Dense_0', 'bias'), 'vector'),
    'head.weight': (('head', 'kernel'), 'dense'),
    'head.bias': (('head', 'bias'), 'vector'),
}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


def _dense_rows(side: int, channels: int) -> np.ndarray:
  """For torch's flattened index (c, h, w) the Flax row (h, w, c)."""
  c, h, w = np.meshgrid(np.arange(channels), np.arange(side), np.arange(side), indexing='ij')
  return ((h * side + w) * channels + c).reshape(-1)


def to_torch(params, side: int = 7) -> dict[str, np.ndarray]:
  """mu_jax CNN params -> a `TorchCNN` state dict (numpy arrays)."""
  out = {}
  for name, (path, kind) in LAYOUT.items():
    a = _get(params, path)
    if kind == 'conv':
      a = a.transpose(3, 2, 0, 1)
    elif kind == 'flatten_dense':
      a = a[_dense_rows(side, a.shape[0] // side ** 2)].T
    elif kind == 'dense':
      a = a.T
    out[name] = np.array(a, np.float32, order='C')   # a writable copy, as torch wants
  return out


def to_flax(named: dict[str, np.ndarray], side: int = 7) -> dict:
  """The inverse of `to_torch` for any per-parameter array (weights, importances)."""
  tree: dict = {}
  for name, (path, kind) in LAYOUT.items():
    a = np.asarray(named[name])
    if kind == 'conv':
      a = a.transpose(2, 3, 1, 0)
    elif kind == 'flatten_dense':
      rows = _dense_rows(side, a.shape[1] // side ** 2)
      b = np.empty_like(a.T)
      b[rows] = a.T
      a = b
    elif kind == 'dense':
      a = a.T
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = a
  return tree


def import_official(checkout: str):
  """The official `ssd` module from a checkout of
  github.com/if-loops/selective-synaptic-dampening, imported unchanged; returns
  (module, names of placeholder modules it needed)."""
  src = os.path.join(checkout, 'src')
  if not os.path.isfile(os.path.join(src, 'ssd.py')):
    raise SystemExit(f'{checkout} is not a checkout of the official SSD repository '
                     '(no src/ssd.py); clone github.com/if-loops/selective-synaptic-dampening.')
  stubbed = []
  for name in UNUSED_BY_PERTURBER:
    try:
      importlib.import_module(name)
    except ImportError:
      module = types.ModuleType(name)
      for attr in ('datasets', 'models', 'transforms'):   # `from torchvision import ...`
        setattr(module, attr, types.ModuleType(f'{name}.{attr}'))
      sys.modules[name] = module
      stubbed.append(name)
  sys.path.insert(0, src)
  try:
    official = importlib.import_module('ssd')
  finally:
    sys.path.remove(src)
  return official, stubbed


def loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False):
  """A DataLoader yielding the official code's (image, coarse label, label) triples,
  NCHW, in row order."""
  images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  labels = torch.from_numpy(y.astype(np.int64))
  data = torch.utils.data.TensorDataset(images, labels, labels)
  return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)


class Worker:
  """The torch process's state: data, weights, the official module."""

  def __init__(self, data_path: str, checkout: str, threads: int):
    torch.set_num_threads(threads)
    self.data = dict(np.load(data_path))
    self.official, self.stubbed = import_official(checkout)
    self.weights = {k[len('w:'):]: v for k, v in self.data.items() if k.startswith('w:')}

  def model(self) -> TorchCNN:
    net = TorchCNN()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.weights.items()})
    return net.eval()

  def logits(self, rows: int) -> np.ndarray:
    x = torch.from_numpy(self.data['d_x'][:rows].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
      return self.model()(x).numpy()

  def ssd(self, alpha: float, dampening: float, batch_size: int, keep: bool = False) -> dict:
    """The official full-class script's SSD (`ssd_tuning`): the forget pass, the full
    pass, then `modify_weight`, timed from the loaders' creation to the last weight."""
    net = self.model()
    parameters = {'lower_bound': 1, 'exponent': 1, 'magnitude_diff': None,
                  'min_layer': -1, 'max_layer': -1, 'forget_threshold': 1,
                  'dampening_constant': dampening, 'selection_weighting': alpha}
    began = time.perf_counter()
    forget_dl = loader(self.data['f_x'], self.data['f_y'], batch_size)
    full_dl = loader(self.data['d_x'], self.data['d_y'], batch_size)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    perturber = self.official.ParameterPerturber(net, optimizer, 'cpu', parameters)
    sample = perturber.calc_importance(forget_dl)
    original = perturber.calc_importance(full_dl)
    perturber.modify_weight(original, sample)
    out = {'seconds': time.perf_counter() - began}
    if keep:
      grab = lambda d: {k: v.detach().numpy().copy() for k, v in d.items()}
      out.update(importance_d=grab(original), importance_f=grab(sample),
                 weights=grab(dict(net.named_parameters())))
    return out

  def importance(self, batch_size: int) -> dict:
    """The official `calc_importance` over D alone."""
    net = self.model()
    perturber = self.official.ParameterPerturber(
        net, torch.optim.SGD(net.parameters(), lr=0.1), 'cpu',
        {k: 1 for k in ('lower_bound', 'exponent', 'magnitude_diff', 'min_layer', 'max_layer',
                        'forget_threshold', 'dampening_constant', 'selection_weighting')})
    began = time.perf_counter()
    perturber.calc_importance(loader(self.data['d_x'], self.data['d_y'], batch_size))
    return {'seconds': time.perf_counter() - began}

  def train(self, steps: int, batch_size: int, learning_rate: float) -> dict:
    """`steps` Adam steps of the official training loop's form (pretrain_model.py
    `train`: zero_grad, forward, cross-entropy, backward, step) over a shuffled
    DataLoader of D, in train mode."""
    net = self.model().train()
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    criterion = nn.CrossEntropyLoss()
    batches = loader(self.data['d_x'], self.data['d_y'], batch_size, shuffle=True)
    done, began = 0, time.perf_counter()
    while done < steps:
      for images, _, labels in batches:
        optimizer.zero_grad()
        criterion(net(images), labels).backward()
        optimizer.step()
        done += 1
        if done == steps:
          break
    return {'seconds': time.perf_counter() - began}


def serve(conn, data_path: str, checkout: str, threads: int) -> None:
  """Answers (method, kwargs) requests on `conn` until it receives None."""
  worker = Worker(data_path, checkout, threads)
  workers.answer(conn, worker, {'stubbed': worker.stubbed, 'torch': torch.__version__,
                                'threads': torch.get_num_threads()})
