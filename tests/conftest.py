"""Test-process setup: 8 fake CPU devices, so sharded and single-device runs
compare, and absl flags marked parsed so absltest helpers work under pytest."""
import os

import jax
from absl import flags

jax.config.update('jax_num_cpu_devices', 8)
os.environ.setdefault('TQDM_DISABLE', '1')
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
