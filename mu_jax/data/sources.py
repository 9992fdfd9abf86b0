"""Raw data sources by kind: scikit-learn digits, MNIST-format IDX files, TFDS,
and two regression sets (scikit-learn's bundled diabetes, seeded Friedman #1).

A source returns unnormalised inputs (NHWC images, or feature rows) with
int32 labels or float targets and the task they pose; splitting and
normalisation live in `splits.py`, so every source is treated alike.
TensorFlow Datasets and scikit-learn are imported only by the sources that
read them.
"""
import gzip
import math
import os
import zlib
from typing import Callable, NamedTuple

import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.registry import Registry


class RawData(NamedTuple):
  """A source's examples before splitting and normalisation."""
  train_x: np.ndarray          # NHWC raw pixel values, or [N, D] features
  train_y: np.ndarray          # int32 labels, or float targets [N, T]
  test_x: np.ndarray | None    # None when the source has no test split
  test_y: np.ndarray | None
  max_value: float             # the raw input maximum; dividing maps to [0, 1]
  outputs: int                 # classes, or regression targets
  task: str = 'classification'


SourceFn = Callable[[str, str | None], RawData]
SOURCES: Registry[SourceFn] = Registry('dataset source')
# Sources without a test split of their own: `load_dataset` carves theirs by test_fraction.
CARVED_TEST = frozenset({'digits', 'diabetes', 'friedman'})

# Supported TFDS names and their class counts (used if the info lacks one).
TFDS_NUM_CLASSES = {
    'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10, 'cifar100': 100,
    'svhn_cropped': 10,
}

# IDX type codes (third magic byte) -> big-endian NumPy dtypes.
_IDX_DTYPES = {
    0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4',
    0x0E: '>f8',
}


def read_source(spec: str, data_dir: str | None) -> RawData:
  """Reads the source that `spec` ('<kind>' or '<kind>:<arg>') names."""
  kind, _, arg = spec.partition(':')
  return SOURCES.get(kind)(arg, data_dir)


@SOURCES.register('digits')
def _digits(arg: str, data_dir: str | None) -> RawData:
  """scikit-learn's bundled 8x8 digits (values 0..16); it has no test split."""
  del data_dir  # Bundled with scikit-learn.
  _no_argument('digits', arg)
  from sklearn import datasets as sk_datasets
  digits = sk_datasets.load_digits()
  return RawData(digits.images.astype(np.float32)[..., None],
                 digits.target.astype(np.int32), None, None, 16.0, 10)


def read_idx(path: str) -> np.ndarray:
  """Parses one IDX file, gzipped or raw: magic, big-endian dims, then data."""
  try:
    with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise MuJaxError(
        f'Cannot read IDX file {path} ({e}); check its permissions or '
        'download it again.') from e
  if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_DTYPES:
    raise MuJaxError(
        f'{path} is not an IDX file (bad magic number 0x{data[:4].hex()}); '
        'replace it with an MNIST-format IDX file.')
  ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
  header = 4 + 4 * ndim
  dims = (tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, 4))
          if len(data) >= header else ())
  if not dims or len(data) != header + math.prod(dims) * dtype.itemsize:
    raise MuJaxError(
        f'{path} is corrupt: its header does not match its {len(data)} bytes '
        'of data; download it again.')
  return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(
      dtype.newbyteorder('='))


def _find_idx(directory: str, stem: str) -> str:
  for name in (stem, stem + '.gz'):
    if os.path.isfile(path := os.path.join(directory, name)):
      return path
  raise MuJaxError(
      f'IDX file {stem}(.gz) is missing from {directory}; put the four '
      'MNIST-format files (train/t10k images and labels) there.')


def _idx_split(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads '<prefix>-images-idx3-ubyte' and its labels as NHWC uint8, int32."""
  images = read_idx(_find_idx(directory, f'{prefix}-images-idx3-ubyte'))
  labels = read_idx(_find_idx(directory, f'{prefix}-labels-idx1-ubyte'))
  if (images.dtype != np.uint8 or labels.dtype != np.uint8 or
      images.ndim != 3 or labels.ndim != 1 or not len(labels)):
    raise MuJaxError(
        f'The {prefix} IDX files in {directory} must hold unsigned-byte images '
        '(N, H, W) and N unsigned-byte labels with N > 0; replace them.')
  if len(images) != len(labels):
    raise MuJaxError(
        f'The {prefix} IDX files in {directory} hold {len(images)} images but '
        f'{len(labels)} labels; replace them with a matching pair.')
  return images[..., None], labels.astype(np.int32)


@SOURCES.register('idx')
def _idx(arg: str, data_dir: str | None) -> RawData:
  """MNIST-format IDX files in the directory `arg` (train and t10k splits)."""
  del data_dir  # The spec names the directory.
  if not arg:
    raise MuJaxError("The idx source needs a directory; write 'idx:<dir>'.")
  directory = os.path.expanduser(arg)
  if not os.path.isdir(directory):
    raise MuJaxError(
        f'IDX directory {directory} does not exist; point idx:<dir> at the '
        'folder holding the MNIST-format files.')
  train_x, train_y = _idx_split(directory, 'train')
  test_x, test_y = _idx_split(directory, 't10k')
  if train_x.shape[1:] != test_x.shape[1:]:
    raise MuJaxError(
        f'The IDX train images in {directory} are {train_x.shape[1:3]} but '
        f'the test images are {test_x.shape[1:3]}; use files of one data set.')
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  return RawData(train_x, train_y, test_x, test_y, 255.0, num_classes)


def _prepare_hint(name: str, data_dir: str) -> str:
  return (f'prepare it on a machine with internet and TensorFlow with `tfds '
          f'build {name} --file_format=array_record --data_dir=<dir>` and '
          f'copy <dir>/{name} into {data_dir}')


def _tfds_split(name: str, split: str,
                data_dir: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Reads every record of one prepared ArrayRecord split; never downloads."""
  import tensorflow_datasets as tfds
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir,
                              download=False)
    # Record by record: tfds' mock_data breaks the batched __getitems__.
    examples = [source[i] for i in range(len(source))]
  except (RuntimeError, ValueError, OSError) as e:
    raise MuJaxError(
        f'No complete ArrayRecord copy of TFDS {name} ({split} split) is under '
        f'{data_dir}; {_prepare_hint(name, data_dir)}.') from e
  label = source.dataset_info.features['label']
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples], np.int32),
          getattr(label, 'num_classes', None) or TFDS_NUM_CLASSES[name])


@SOURCES.register('tfds')
def _tfds(name: str, data_dir: str | None) -> RawData:
  """A standard image-classification TFDS data set, read from `data_dir`."""
  if name not in TFDS_NUM_CLASSES:
    raise MuJaxError(
        f'Unsupported TFDS data set {name!r}; use one of: '
        f'{", ".join(TFDS_NUM_CLASSES)}.')
  if data_dir is None:
    raise MuJaxError(
        f'tfds:{name} needs data_dir, the folder with the prepared data set; '
        f'set it, and if needed {_prepare_hint(name, "it")}.')
  if not os.path.isdir(data_dir):
    raise MuJaxError(
        f'TFDS data_dir {data_dir} does not exist; create it and '
        f'{_prepare_hint(name, data_dir)}.')
  train_x, train_y, num_classes = _tfds_split(name, 'train', data_dir)
  test_x, test_y, _ = _tfds_split(name, 'test', data_dir)
  return RawData(train_x, train_y, test_x, test_y, 255.0, num_classes)


def _no_argument(kind: str, arg: str) -> None:
  if arg:
    raise MuJaxError(f"The {kind} source takes no argument but got '{kind}:{arg}'; "
                     f"write '{kind}'.")


@SOURCES.register('diabetes')
def _diabetes(arg: str, data_dir: str | None) -> RawData:
  """scikit-learn's bundled diabetes regression (442 patients, 10 features,
  disease progression after one year); it has no test split."""
  del data_dir  # Bundled with scikit-learn.
  _no_argument('diabetes', arg)
  from sklearn import datasets as sk_datasets
  x, y = sk_datasets.load_diabetes(return_X_y=True)
  return RawData(x.astype(np.float32), y.astype(np.float32)[:, None], None, None, 1.0, 1,
                 'regression')


FRIEDMAN_ROWS = 2000    # rows of the seeded Friedman #1 set (an engineering choice)
FRIEDMAN_NOISE = 1.0    # Friedman (1991) and scikit-learn's example: unit Gaussian noise


@SOURCES.register('friedman')
def _friedman(arg: str, data_dir: str | None) -> RawData:
  """Friedman #1 (Friedman 1991): x ~ U[0, 1]^10 and the known ground truth
  y = 10 sin(π x1 x2) + 20 (x3 − 0.5)² + 10 x4 + 5 x5 + N(0, 1); x6..x10 are
  irrelevant. Generated with the fixed seed 0, so it is one fixed data set."""
  del data_dir  # Generated.
  _no_argument('friedman', arg)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(FRIEDMAN_ROWS, 10))
  y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
       + 10 * x[:, 3] + 5 * x[:, 4] + FRIEDMAN_NOISE * rng.normal(size=FRIEDMAN_ROWS))
  return RawData(x.astype(np.float32), y.astype(np.float32)[:, None], None, None, 1.0, 1,
                 'regression')
