"""Small two-conv CNN backbone (the classic MNIST network)."""
import flax.linen as nn
import jax


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 over NHWC, as a reshape and a max.

  Equals `nn.max_pool(x, (2, 2), (2, 2))` (VALID padding): an odd last row or
  column is cropped, as there and in PyTorch's MaxPool2d (8 -> 4 -> 2,
  7 -> 3). Differentiating a max over reshaped axes is much faster on CPU than
  `nn.max_pool`'s select-and-scatter. The gradients agree except at exact ties
  within a window, which a max shares equally and select-and-scatter gives to
  one element.
  """
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
  """Conv32-pool-Conv64-pool-Dense128; features are the Dense128 ReLU output."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No BatchNorm or dropout.
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3), padding='SAME')(x))
      x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(128)(x))
