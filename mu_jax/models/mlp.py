"""Multi-layer perceptron backbone: flatten, then Dense + ReLU per layer."""
import flax.linen as nn
import jax


class MLP(nn.Module):
  """Features are the last hidden layer's ReLU output (the input if none)."""
  hidden: tuple[int, ...] = (256, 256)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No BatchNorm or dropout.
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return x
