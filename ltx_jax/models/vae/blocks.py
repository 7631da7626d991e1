"""The official VAE block-list vocabulary: which blocks exist, their strides, and `Block`.

The official `CausalVideoAutoencoder` describes its encoder and decoder as lists of blocks
(`["res_x", {"num_layers": 4}]`, `["compress_all_res", {"multiplier": 2}]`, ...); `parse_blocks`
resolves such a list into `Block`s (see config.py for what each block means).
"""

from __future__ import annotations

import dataclasses

from ltx_jax.errors import DataError

ENCODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all',
                  'compress_all_x_y', 'compress_time_res', 'compress_space_res', 'compress_all_res')
DECODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all')

# (time, height, width) strides of the compressing blocks.
STRIDES = {
    'compress_time': (2, 1, 1), 'compress_space': (1, 2, 2), 'compress_all': (2, 2, 2),
    'compress_all_x_y': (2, 2, 2), 'compress_time_res': (2, 1, 1),
    'compress_space_res': (1, 2, 2), 'compress_all_res': (2, 2, 2),
}
# Channel multiplier when a block does not name one (None: the block keeps its channels).
_DEFAULT_MULTIPLIER = {
    'encoder': {'res_x_y': 2, 'compress_all_x_y': 2, 'compress_time_res': 2,
                'compress_space_res': 2, 'compress_all_res': 2},
    'decoder': {'res_x_y': 2, 'compress_all': 1},
}


@dataclasses.dataclass(frozen=True)
class Block:
  """One entry of a block list. `multiplier` is resolved (1 for blocks that keep channels)."""
  name: str
  num_layers: int = 1
  multiplier: int = 1
  residual: bool = False
  inject_noise: bool = False

  @property
  def stride(self) -> tuple[int, int, int]:
    return STRIDES.get(self.name, (1, 1, 1))

  def to_official(self) -> list:
    if self.name == 'res_x':
      return [self.name, {'num_layers': self.num_layers, 'inject_noise': self.inject_noise}]
    return [self.name, {'multiplier': self.multiplier, 'residual': self.residual,
                        'inject_noise': self.inject_noise}]


def parse_blocks(blocks, side: str) -> tuple[Block, ...]:
  """Official JSON block list (`[name, int | dict]` pairs) -> resolved `Block`s."""
  allowed = ENCODER_BLOCKS if side == 'encoder' else DECODER_BLOCKS
  out = []
  for name, params in blocks:
    if name not in allowed:
      raise DataError(f"VAE {side} block {name!r} is not supported (supported: {allowed})")
    params = {'num_layers': params} if isinstance(params, int) else dict(params)
    mult = params.get('multiplier', _DEFAULT_MULTIPLIER[side].get(name, 1))
    if side == 'decoder' and name in ('compress_time', 'compress_space'):
      mult, params['residual'] = 1, False  # the reference ignores their parameters
    out.append(Block(name, int(params.get('num_layers', 1)), int(mult),
                     bool(params.get('residual', False)),
                     bool(params.get('inject_noise', False)) and side == 'decoder'))
  return tuple(out)
