"""Tests for mu_jax.data: sources, splits, normalisation and forget sets."""
import collections
import gzip
import io
import os
import re

from absl.testing import absltest
from absl.testing import parameterized
from array_record.python import array_record_module
import numpy as np
from PIL import Image
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from mu_jax.data import Dataset
from mu_jax.data import load_dataset
from mu_jax.data import save_indices
from mu_jax.data import select_forget
from mu_jax.data import sources
from mu_jax.data import splits
from mu_jax.errors import MuJaxError

FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


def all_splits(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
  return (np.concatenate([ds.train['x'], ds.val['x'], ds.test['x']]),
          np.concatenate([ds.train['y'], ds.val['y'], ds.test['y']]))


def raw_values(x: np.ndarray, max_value: float) -> np.ndarray:
  """Undoes the per-channel affine normalisation of data spanning 0..max."""
  lo = x.min(axis=(0, 1, 2))
  hi = x.max(axis=(0, 1, 2))
  return np.rint((x - lo) / (hi - lo) * max_value).astype(np.int64)


def assert_standardised(x: np.ndarray) -> None:
  """Checks per-channel mean 0 and std 1 (measured in float64)."""
  axes = (0, 1, 2)
  np.testing.assert_allclose(x.mean(axis=axes, dtype=np.float64), 0, atol=1e-6)
  np.testing.assert_allclose(x.std(axis=axes, dtype=np.float64), 1, atol=1e-6)


def row_counts(x: np.ndarray, y: np.ndarray) -> collections.Counter:
  """Multiset of (image bytes, label): compares splits regardless of order."""
  return collections.Counter(
      (xi.tobytes(), int(yi)) for xi, yi in zip(x, y))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes an unsigned-byte IDX file (gzipped if `path` ends in .gz)."""
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(
      array.shape, '>u4').tobytes()
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def tiny_idx_dir(directory: str, *, gz: bool, n_train: int = 40,
                 n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """Writes MNIST-format files whose pixel (0, 0) is the example's id.

  Pixel (0, 2) is 255 and the rest 0, so every split spans 0..255.
  """
  images = np.zeros((n_train + n_test, 5, 4), np.uint8)
  images[:, 0, 0] = np.arange(n_train + n_test)
  images[:, 0, 2] = 255
  labels = (np.arange(n_train + n_test) % 3).astype(np.uint8)
  ext = '.gz' if gz else ''
  for prefix, part in [('train', slice(0, n_train)),
                       ('t10k', slice(n_train, None))]:
    write_idx(os.path.join(directory, f'{prefix}-images-idx3-ubyte{ext}'),
              images[part])
    write_idx(os.path.join(directory, f'{prefix}-labels-idx1-ubyte{ext}'),
              labels[part])
  return images, labels


def png(image: np.ndarray) -> io.BytesIO:
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1)).save(buf, format='PNG')
  buf.seek(0)
  return buf


def prepare_tfds_mnist(data_dir: str, images: dict[str, np.ndarray],
                       labels: dict[str, np.ndarray]) -> None:
  """Writes a genuinely prepared ArrayRecord 'mnist' (no TensorFlow needed)."""
  builder = tfds.builder('mnist', data_dir=data_dir,
                         file_format='array_record')
  os.makedirs(builder.data_path)
  infos = []
  for split in images:
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, dataset_name='mnist', split=split,
        filetype_suffix='array_record')
    writer = array_record_module.ArrayRecordWriter(
        os.fspath(template.sharded_filepath(shard_index=0, num_shards=1)),
        'group_size:1')
    for image, label in zip(images[split], labels[split]):
      writer.write(builder.info.features.serialize_example(
          {'image': png(image), 'label': int(label)}))
    writer.close()
    infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[len(labels[split])], num_bytes=0,
        filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(infos))
  builder.info.set_file_format('array_record')
  builder.info.write_to_directory(builder.data_path)


class DigitsTest(absltest.TestCase):

  def test_shapes_dtypes_and_classes(self):
    ds = load_dataset('digits', seed=0, val_fraction=0.1, test_fraction=0.2)
    self.assertEqual(ds.name, 'digits')
    self.assertEqual(ds.outputs, 10)
    self.assertEqual(
        [len(ds.train['y']), len(ds.val['y']), len(ds.test['y'])],
        [1797 - 180 - 359, 180, 359])
    for s in (ds.train, ds.val, ds.test):
      self.assertEqual(s['x'].shape[1:], (8, 8, 1))
      self.assertEqual(s['x'].dtype, np.float32)
      self.assertEqual(s['y'].dtype, np.int32)
      self.assertTrue(((s['y'] >= 0) & (s['y'] < 10)).all())
    self.assertEqual(set(ds.train['y'].tolist()), set(range(10)))

  def test_deterministic_per_seed(self):
    a = load_dataset('digits', seed=3)
    b = load_dataset('digits', seed=3)
    for sa, sb in zip(a[1:4], b[1:4]):
      self.assertEqual(sa['x'].tobytes(), sb['x'].tobytes())
      self.assertEqual(sa['y'].tobytes(), sb['y'].tobytes())
    c = load_dataset('digits', seed=4)
    self.assertNotEqual(row_counts(raw_values(a.test['x'], 16), a.test['y']),
                        row_counts(raw_values(c.test['x'], 16), c.test['y']))

  def test_splits_partition_the_source(self):
    ds = load_dataset('digits', seed=1)
    x, y = all_splits(ds)
    digits = sk_datasets.load_digits()
    self.assertEqual(
        row_counts(raw_values(x, 16), y),
        row_counts(digits.images.astype(np.int64)[..., None], digits.target))

  def test_train_is_standardised(self):
    ds = load_dataset('digits')
    assert_standardised(ds.train['x'])
    self.assertGreater(abs(ds.test['x'].mean()), 0)

  def test_zero_val_fraction_gives_empty_split(self):
    ds = load_dataset('digits', val_fraction=0.0)
    self.assertEqual(ds.val['x'].shape, (0, 8, 8, 1))
    self.assertEqual(ds.val['x'].dtype, np.float32)
    self.assertEqual(ds.val['y'].shape, (0,))
    self.assertLen(ds.train['y'], 1797 - 359)

  def test_bad_fractions(self):
    for val, test in [(-0.1, 0.2), (1.0, 0.0), (0.1, 1.0), (0.5, 0.5),
                      (float('nan'), 0.2)]:
      with self.assertRaisesRegex(MuJaxError, 'must each lie in'):
        load_dataset('digits', val_fraction=val, test_fraction=test)

  def test_digits_takes_no_argument(self):
    with self.assertRaisesRegex(MuJaxError, "write 'digits'"):
      load_dataset('digits:8x8')

  def test_unknown_source_lists_kinds(self):
    with self.assertRaisesRegex(MuJaxError,
                                'valid names are: diabetes, digits, friedman, idx, tfds'):
      load_dataset('csv:/tmp/x')


class CarveTest(absltest.TestCase):

  def test_disjoint_sorted_cover(self):
    train, val, test = splits.carve(101, val_fraction=0.1, test_fraction=0.3,
                                    seed=5)
    self.assertEqual((len(train), len(val), len(test)), (61, 10, 30))
    everything = np.concatenate([train, val, test])
    np.testing.assert_array_equal(np.sort(everything), np.arange(101))
    for part in (train, val, test):
      np.testing.assert_array_equal(part, np.sort(part))


class IdxTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_read_idx_round_trip(self, gz):
    path = os.path.join(self.create_tempdir().full_path,
                        'a-idx3-ubyte' + ('.gz' if gz else ''))
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5).astype(np.uint8)
    write_idx(path, array)
    out = sources.read_idx(path)
    self.assertEqual(out.dtype, np.uint8)
    np.testing.assert_array_equal(out, array)

  def test_read_idx_big_endian_ints(self):
    path = os.path.join(self.create_tempdir().full_path, 'ints-idx1')
    values = np.array([1, -2, 70000], '>i4')
    with open(path, 'wb') as f:
      f.write(bytes([0, 0, 0x0C, 1]) + np.array([3], '>u4').tobytes() +
              values.tobytes())
    np.testing.assert_array_equal(sources.read_idx(path), [1, -2, 70000])

  @parameterized.parameters(True, False)
  def test_load_splits_and_normalisation(self, gz):
    directory = self.create_tempdir().full_path
    _, labels = tiny_idx_dir(directory, gz=gz)
    ds = load_dataset(f'idx:{directory}', seed=2, val_fraction=0.25)
    self.assertEqual(ds.outputs, 3)
    self.assertEqual(ds.train['x'].shape, (30, 5, 4, 1))
    self.assertEqual(ds.val['x'].shape, (10, 5, 4, 1))
    self.assertEqual(ds.test['x'].shape, (10, 5, 4, 1))
    assert_standardised(ds.train['x'])
    ids = {}
    for name, s in [('train', ds.train), ('val', ds.val), ('test', ds.test)]:
      ids[name] = raw_values(s['x'], 255)[:, 0, 0, 0]
      np.testing.assert_array_equal(s['y'], labels[ids[name]])
    self.assertCountEqual(np.concatenate([ids['train'], ids['val']]),
                          range(40))
    np.testing.assert_array_equal(ids['test'], range(40, 50))
    np.testing.assert_array_equal(ids['train'], np.sort(ids['train']))

  def test_bad_magic(self):
    directory = self.create_tempdir().full_path
    tiny_idx_dir(directory, gz=False)
    path = os.path.join(directory, 'train-images-idx3-ubyte')
    with open(path, 'r+b') as f:
      f.write(b'\x01\x02')
    with self.assertRaisesRegex(MuJaxError, 'bad magic number'):
      load_dataset(f'idx:{directory}')

  def test_truncated_file(self):
    directory = self.create_tempdir().full_path
    tiny_idx_dir(directory, gz=True)
    path = os.path.join(directory, 't10k-images-idx3-ubyte.gz')
    with gzip.open(path, 'rb') as f:
      data = f.read()
    with gzip.open(path, 'wb') as f:
      f.write(data[:-7])
    with self.assertRaisesRegex(MuJaxError, 'is corrupt'):
      load_dataset(f'idx:{directory}')

  def test_broken_gzip(self):
    directory = self.create_tempdir().full_path
    tiny_idx_dir(directory, gz=True)
    with open(os.path.join(directory, 'train-labels-idx1-ubyte.gz'),
              'wb') as f:
      f.write(b'not gzip at all')
    with self.assertRaisesRegex(MuJaxError, 'Cannot read IDX file'):
      load_dataset(f'idx:{directory}')

  def test_label_count_mismatch(self):
    directory = self.create_tempdir().full_path
    tiny_idx_dir(directory, gz=False)
    write_idx(os.path.join(directory, 'train-labels-idx1-ubyte'),
              np.zeros(39, np.uint8))
    with self.assertRaisesRegex(MuJaxError, '40 images but 39 labels'):
      load_dataset(f'idx:{directory}')

  def test_missing_directory_and_file(self):
    directory = self.create_tempdir().full_path
    with self.assertRaisesRegex(MuJaxError, 'is missing from'):
      load_dataset(f'idx:{directory}')
    with self.assertRaisesRegex(MuJaxError, 'does not exist'):
      load_dataset(f'idx:{directory}/nowhere')
    with self.assertRaisesRegex(MuJaxError, "write 'idx:<dir>'"):
      load_dataset('idx:')

  @absltest.skipUnless(os.path.isdir(FASHION_MNIST),
                       'Debian dataset-fashion-mnist is not installed.')
  def test_real_fashion_mnist(self):
    ds = load_dataset(f'idx:{FASHION_MNIST}', seed=0, val_fraction=0.1)
    self.assertEqual(ds.train['x'].shape, (54000, 28, 28, 1))
    self.assertEqual(ds.val['x'].shape, (6000, 28, 28, 1))
    self.assertEqual(ds.test['x'].shape, (10000, 28, 28, 1))
    self.assertEqual(ds.outputs, 10)
    np.testing.assert_array_equal(np.bincount(ds.test['y']), [1000] * 10)
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([ds.train['y'], ds.val['y']])), [6000] * 10)
    assert_standardised(ds.train['x'])


class TfdsTest(absltest.TestCase):

  def test_mock_mnist_through_data_source(self):
    data_dir = self.create_tempdir().full_path
    with tfds.testing.mock_data(num_examples=50,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      ds = load_dataset('tfds:mnist', data_dir=data_dir, seed=0,
                        val_fraction=0.2)
      again = load_dataset('tfds:mnist', data_dir=data_dir, seed=0,
                           val_fraction=0.2)
    self.assertEqual(ds.outputs, 10)
    self.assertEqual(ds.train['x'].shape, (40, 28, 28, 1))
    self.assertEqual(ds.val['x'].shape, (10, 28, 28, 1))
    self.assertEqual(ds.test['x'].shape, (50, 28, 28, 1))
    self.assertTrue(((ds.train['y'] >= 0) & (ds.train['y'] < 10)).all())
    self.assertEqual(ds.train['x'].tobytes(), again.train['x'].tobytes())

  def test_mock_cifar100_fine_labels_per_channel(self):
    data_dir = self.create_tempdir().full_path
    with tfds.testing.mock_data(num_examples=30,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      ds = load_dataset('tfds:cifar100', data_dir=data_dir, val_fraction=0.0)
    self.assertEqual(ds.outputs, 100)
    self.assertEqual(ds.train['x'].shape, (30, 32, 32, 3))
    self.assertEqual(ds.val['x'].shape, (0, 32, 32, 3))
    assert_standardised(ds.train['x'])

  def test_prepared_array_record_data(self):
    data_dir = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
              for s, n in [('train', 12), ('test', 5)]}
    labels = {'train': np.arange(12) % 10, 'test': np.arange(5)}
    prepare_tfds_mnist(data_dir, images, labels)
    ds = load_dataset('tfds:mnist', data_dir=data_dir, val_fraction=0.0)
    np.testing.assert_array_equal(ds.train['y'], labels['train'])
    np.testing.assert_array_equal(ds.test['y'], labels['test'])
    mean = images['train'].mean() / 255
    std = (images['train'] / 255).std()
    np.testing.assert_allclose(ds.test['x'], (images['test'] / 255 - mean) / std,
                               rtol=1e-4, atol=1e-4)

  def test_missing_shard(self):
    data_dir = self.create_tempdir().full_path
    prepare_tfds_mnist(
        data_dir, {'train': np.zeros((3, 28, 28, 1), np.uint8),
                   'test': np.zeros((2, 28, 28, 1), np.uint8)},
        {'train': np.arange(3), 'test': np.arange(2)})
    builder_dir = tfds.builder('mnist', data_dir=data_dir).data_path
    os.remove(builder_dir / 'mnist-test.array_record-00000-of-00001')
    with self.assertRaisesRegex(MuJaxError, r'\(test split\) is under'):
      load_dataset('tfds:mnist', data_dir=data_dir)

  def test_missing_data(self):
    with self.assertRaisesRegex(MuJaxError, 'needs data_dir'):
      load_dataset('tfds:mnist')
    with self.assertRaisesRegex(MuJaxError, 'does not exist'):
      load_dataset('tfds:mnist', data_dir='/nonexistent/tfds')
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        MuJaxError, f'under {re.escape(empty)};.*tfds build mnist'):
      load_dataset('tfds:mnist', data_dir=empty)

  def test_unknown_name_lists_supported(self):
    with self.assertRaisesRegex(MuJaxError, 'mnist, fashion_mnist, cifar10'):
      load_dataset('tfds:imagenet2012', data_dir='/tmp')


class SelectForgetTest(parameterized.TestCase):

  labels = np.arange(200) % 4

  def test_random(self):
    idx = select_forget('random:0.1', self.labels, 4, seed=0)
    self.assertEqual(idx.dtype, np.int64)
    self.assertLen(idx, 20)
    self.assertLen(np.unique(idx), 20)
    np.testing.assert_array_equal(idx, np.sort(idx))
    self.assertTrue(((idx >= 0) & (idx < 200)).all())
    np.testing.assert_array_equal(
        idx, select_forget('random:0.1', self.labels, 4, seed=0))
    self.assertFalse(np.array_equal(
        idx, select_forget('random:0.1', self.labels, 4, seed=1)))

  def test_random_takes_at_least_one(self):
    self.assertLen(select_forget('random:0.001', self.labels, 4, seed=0), 1)

  @parameterized.parameters('random:0', 'random:1', 'random:-0.1',
                            'random:1.5', 'random:abc', 'random:', 'random',
                            'random:nan')
  def test_random_bad(self, spec):
    with self.assertRaisesRegex(MuJaxError, 'strictly between 0 and 1'):
      select_forget(spec, self.labels, 4, seed=0)

  def test_class(self):
    idx = select_forget('class:2', self.labels, 4, seed=0)
    np.testing.assert_array_equal(idx, np.arange(2, 200, 4))
    self.assertEqual(idx.dtype, np.int64)

  @parameterized.parameters('class:4', 'class:-1', 'class:x', 'class:',
                            'class:1.0')
  def test_class_bad(self, spec):
    with self.assertRaisesRegex(MuJaxError, r'integer class in \[0, 3\]'):
      select_forget(spec, self.labels, 4, seed=0)

  def test_class_without_examples(self):
    with self.assertRaisesRegex(MuJaxError, 'no training examples'):
      select_forget('class:4', self.labels, 5, seed=0)

  def test_whole_training_set(self):
    with self.assertRaisesRegex(MuJaxError, 'is the whole training set'):
      select_forget('class:0', np.zeros(10, np.int32), 3, seed=0)
    path = os.path.join(self.create_tempdir().full_path, 'all.npy')
    np.save(path, np.arange(10))
    with self.assertRaisesRegex(MuJaxError, 'nothing would be left to retain'):
      select_forget(f'file:{path}', np.zeros(10, np.int32), 3, seed=0)

  def test_empty_training_set(self):
    with self.assertRaisesRegex(MuJaxError, 'training set is empty'):
      select_forget('random:0.5', np.zeros(0, np.int32), 3, seed=0)

  @parameterized.parameters('5\n1\n3\n', '5, 1,3', '5 1\t3\n', '5,\n1,\n3,\n')
  def test_file_text(self, text):
    path = os.path.join(self.create_tempdir().full_path, 'forget.txt')
    with open(path, 'w') as f:
      f.write(text)
    idx = select_forget(f'file:{path}', self.labels, 4, seed=0)
    np.testing.assert_array_equal(idx, [1, 3, 5])
    self.assertEqual(idx.dtype, np.int64)

  def test_file_npy(self):
    path = os.path.join(self.create_tempdir().full_path, 'forget.npy')
    np.save(path, np.array([7, 2, 199], np.int32))
    np.testing.assert_array_equal(
        select_forget(f'file:{path}', self.labels, 4, seed=0), [2, 7, 199])

  @parameterized.named_parameters(
      ('out_of_range', '3\n200\n-1\n', 'holds index 200, outside'),
      ('negative', '-1\n3\n', 'holds index -1, outside'),
      ('duplicate', '3\n4\n3\n', 'lists index 3 more than once'),
      ('empty', '\n \n', 'lists no indices'),
      ('not_integer', '3\n4.5\n', "holds '4.5', which is not an integer"),
  )
  def test_file_bad_text(self, text, message):
    path = os.path.join(self.create_tempdir().full_path, 'forget.txt')
    with open(path, 'w') as f:
      f.write(text)
    with self.assertRaisesRegex(MuJaxError, message):
      select_forget(f'file:{path}', self.labels, 4, seed=0)

  def test_file_bad_npy_and_missing(self):
    path = os.path.join(self.create_tempdir().full_path, 'forget.npy')
    np.save(path, np.array([1.0, 2.0]))
    with self.assertRaisesRegex(MuJaxError, 'holds float64 values'):
      select_forget(f'file:{path}', self.labels, 4, seed=0)
    with self.assertRaisesRegex(MuJaxError, 'does not exist'):
      select_forget('file:/nonexistent/forget.npy', self.labels, 4, seed=0)
    with self.assertRaisesRegex(MuJaxError, 'does not exist'):
      select_forget('file:', self.labels, 4, seed=0)

  def test_unknown_selector_lists_kinds(self):
    with self.assertRaisesRegex(MuJaxError, 'valid names are: class, cluster, '
                                'file, random'):
      select_forget('worst:0.1', self.labels, 4, seed=0)


class SaveIndicesTest(absltest.TestCase):

  def test_round_trip_creates_dirs_and_leaves_no_temp(self):
    root = self.create_tempdir().full_path
    path = os.path.join(root, 'a', 'b', 'forget.npy')
    save_indices(path, np.array([4, 1, 9], np.int32))
    loaded = np.load(path)
    self.assertEqual(loaded.dtype, np.int64)
    np.testing.assert_array_equal(loaded, [4, 1, 9])
    save_indices(path, np.array([2]))
    np.testing.assert_array_equal(np.load(path), [2])
    self.assertEqual(os.listdir(os.path.dirname(path)), ['forget.npy'])

  def test_saved_indices_select_the_same_forget_set(self):
    labels = np.arange(50) % 5
    idx = select_forget('random:0.2', labels, 5, seed=7)
    path = os.path.join(self.create_tempdir().full_path, 'forget.npy')
    save_indices(path, idx)
    np.testing.assert_array_equal(
        select_forget(f'file:{path}', labels, 5, seed=0), idx)

  def test_rejects_non_integer(self):
    path = os.path.join(self.create_tempdir().full_path, 'x.npy')
    with self.assertRaisesRegex(MuJaxError, 'not integers'):
      save_indices(path, np.array([0.5]))
    self.assertFalse(os.path.exists(path))


if __name__ == '__main__':
  absltest.main()
