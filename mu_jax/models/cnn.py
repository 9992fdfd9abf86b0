"""Small two-conv CNN backbone (the classic MNIST network), lowered for CPU speed.

Each block computes ReLU(conv(x) + b) then a 2x2 max-pool, as
`nn.Conv` -> `nn.relu` -> `nn.max_pool` would, with the same parameters
('Conv_0/kernel', 'Conv_0/bias', ...; same shapes, initializers and RNG
streams), but evaluated as max-pool(conv(x)) + b, then ReLU, and on a CPU with
the kernel's gradient taken as nine matrix products, one per 3x3 tap. Max commutes
with adding a per-channel constant and with the monotone ReLU (rounding of
a + b is monotone in a), so the values are bit-identical, while the bias add,
ReLU and their gradients run on a quarter of the elements. Together with the
slice-based pool and that kernel gradient this trains several times faster on
a CPU than the straightforward Flax version (`ReferenceCNN`; benchmarks/perf.py
measures both), and tests/test_scale_lowering.py checks that outputs,
gradients and training steps agree.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_CONV_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _quadrants(x: jax.Array) -> list[jax.Array]:
  """The four strided 2x2-window positions, in row-major window order."""
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return [x[:, a::2, b::2, :] for a in (0, 1) for b in (0, 1)]


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 over NHWC: `nn.max_pool(x, (2, 2), (2, 2))`.

  VALID padding: an odd last row or column is cropped, as there and in
  PyTorch's MaxPool2d (8 -> 4 -> 2, 7 -> 3). The forward pass is a max of four
  strided slices; the derivative routes each window's tangent to its first
  maximal element in row-major order, exactly as XLA's select-and-scatter
  (and PyTorch) do, ties included, but as slices and selects, which XLA:CPU
  runs several times faster.
  """
  q = _quadrants(x)
  return jnp.maximum(jnp.maximum(q[0], q[1]), jnp.maximum(q[2], q[3]))


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  out = max_pool_2x2(x)
  q, tq = _quadrants(x), _quadrants(t)
  t_out = jnp.where(q[0] == out, tq[0],
                    jnp.where(q[1] == out, tq[1], jnp.where(q[2] == out, tq[2], tq[3])))
  return out, t_out


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_CONV_DIMS)


def _by_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """conv(x, kernel) as Σ_taps shifted(x) @ kernel[tap]. Used for the kernel's
  tangent only: its transpose, the kernel gradient, is then one [C, rows] @
  [rows, O] product per tap, where XLA:CPU's transposed convolution spends
  about twice as long plus layout copies (a jax.profiler trace on a 2-core
  EPYC: 19 ms of a 57 ms batch-64 gradient of this CNN)."""
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = sum(padded[:, i:i + h, j:j + w, :].reshape(n * h * w, c) @ kernel[i, j]
            for i in range(3) for j in range(3))
  return out.reshape(n, h, w, -1)


@jax.custom_jvp
def conv_3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 SAME convolution, NHWC x HWIO: `lax.conv_general_dilated`'s values and
  input derivative; on a CPU the kernel derivative goes through `_by_taps`
  (other platforms keep the convolution's own). A JVP rule, so forward mode,
  HVPs and double backprop work as for any JAX function."""
  return _conv(x, kernel)


@conv_3x3.defjvp
def _conv_3x3_jvp(primals, tangents):
  (x, kernel), (tx, tk) = primals, tangents
  kernel_term = lax.platform_dependent(x, tk, cpu=_by_taps, default=_conv)
  return _conv(x, kernel), _conv(tx, kernel) + kernel_term


class ConvReLUPool(nn.Module):
  """3x3 SAME conv with bias, ReLU, 2x2 max-pool; params as `nn.Conv`'s."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # nn.Conv's defaults, so checkpoints and fresh initializations are unchanged.
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return nn.relu(max_pool_2x2(conv_3x3(x, kernel)) + bias)


class CNN(nn.Module):
  """Conv32-pool-Conv64-pool-Dense128; features are the Dense128 ReLU output."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No BatchNorm or dropout.
    for i, features in enumerate((32, 64)):
      x = ConvReLUPool(features, name=f'Conv_{i}')(x)
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(128)(x))


class ReferenceCNN(nn.Module):
  """`CNN` written the straightforward Flax way: nn.Conv, nn.relu, nn.max_pool.

  The same parameters and function, with the slow lowering; tests and
  benchmarks/perf.py compare `CNN` against it.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(128)(x))
