"""ResNet-18 backbone with the CIFAR stem, following torchvision's layout.

The stem is a 3x3 stride-1 conv (no 7x7 conv, no max-pool), as is usual for
32x32 inputs; stages of two BasicBlocks with width, 2x, 4x, 8x channels
downsample by stride 2 at the start of stages 2-4 with 1x1 conv + BN
projection shortcuts. Features are the global average pool, [N, 8 * width].
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

STAGE_SIZES = (2, 2, 2, 2)

# torchvision ResNet init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(features: int, kernel: int, strides: int, dtype: Any,
          name: str) -> nn.Conv:
  """A bias-free conv (BN follows) padded like PyTorch's (kernel - 1) // 2.

  Explicit symmetric padding keeps PyTorch's sampling grid; 'SAME' would pad
  only the bottom/right at stride 2.
  """
  return nn.Conv(features, (kernel, kernel), strides=strides,
                 padding=(kernel - 1) // 2, use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch defaults (its momentum=0.1 is Flax's 0.9).

  Batch statistics in training, running averages in evaluation. Flax updates
  the running variance with the biased batch variance, PyTorch the unbiased.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers plus an identity or projection shortcut."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = _conv(self.features, 3, self.strides, self.dtype, 'conv1')(x)
    y = nn.relu(_norm(train, self.dtype, 'bn1')(y))
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = _norm(train, self.dtype, 'bn2')(y)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.strides, self.dtype,
                       'proj_conv')(x)
      shortcut = _norm(train, self.dtype, 'proj_bn')(shortcut)
    return nn.relu(y + shortcut)


class ResNet18(nn.Module):
  """CIFAR ResNet-18 up to the global average pool; `width` is 64 normally."""
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _conv(self.width, 3, 1, self.dtype, 'stem_conv')(x)
    x = nn.relu(_norm(train, self.dtype, 'stem_bn')(x))
    for stage, num_blocks in enumerate(STAGE_SIZES):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, self.dtype,
                       name=f'stage{stage + 1}_block{block + 1}')(x, train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
