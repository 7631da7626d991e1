"""The official VAE block-list vocabulary: which blocks exist, their strides, and `Block`.

The official `CausalVideoAutoencoder` describes its encoder and decoder as lists of blocks
(`["res_x", {"num_layers": 4}]`, `["compress_all_res", {"multiplier": 2}]`, ...); `parse_blocks`
resolves such a list into `Block`s (see config.py for what each block means).
"""

from __future__ import annotations

import dataclasses

from ltx_jax.errors import CheckpointFormatError, DataError
from ltx_jax.weights import values as V

ENCODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all',
                  'compress_all_x_y', 'compress_time_res', 'compress_space_res', 'compress_all_res')
DECODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all')

# (time, height, width) strides of the compressing blocks.
STRIDES = {
    'compress_time': (2, 1, 1), 'compress_space': (1, 2, 2), 'compress_all': (2, 2, 2),
    'compress_all_x_y': (2, 2, 2), 'compress_time_res': (2, 1, 1),
    'compress_space_res': (1, 2, 2), 'compress_all_res': (2, 2, 2),
}
# The blocks that read a `multiplier`, with its default. The official encoder multiplies channels
# by it; the official decoder multiplies the channels after its conv_in by every compress_* and
# res_x_y multiplier, and divides them again in res_x_y and compress_all only (its
# compress_time / compress_space keep their channels: their multiplier only widens what comes
# before them). Every other block ignores a multiplier it is given, as the reference does.
_DEFAULT_MULTIPLIER = {
    'encoder': {'res_x_y': 2, 'compress_all_x_y': 2, 'compress_time_res': 2,
                'compress_space_res': 2, 'compress_all_res': 2},
    'decoder': {'res_x_y': 2, 'compress_time': 1, 'compress_space': 1, 'compress_all': 1},
}
_KEEP_CHANNELS = ('compress_time', 'compress_space')  # decoder blocks that divide by nothing


@dataclasses.dataclass(frozen=True)
class Block:
  """One entry of a block list. `multiplier` is resolved (1 for blocks that keep channels)."""
  name: str
  num_layers: int = 1
  multiplier: int = 1
  residual: bool = False
  inject_noise: bool = False

  def __post_init__(self):
    V.check_choice(self.name, 'block name', ENCODER_BLOCKS, 'VAE')
    V.check_int(self.num_layers, f'{self.name} num_layers', 1, V.MAX_LAYERS, 'VAE')
    V.check_int(self.multiplier, f'{self.name} multiplier', 1, 64, 'VAE')
    V.check_bool(self.residual, f'{self.name} residual', 'VAE')
    V.check_bool(self.inject_noise, f'{self.name} inject_noise', 'VAE')

  @property
  def divisor(self) -> int:
    """Decoder only: what this block divides the channels by."""
    return 1 if self.name in _KEEP_CHANNELS else self.multiplier

  @property
  def stride(self) -> tuple[int, int, int]:
    return STRIDES.get(self.name, (1, 1, 1))

  def to_official(self) -> list:
    if self.name == 'res_x':
      return [self.name, {'num_layers': self.num_layers, 'inject_noise': self.inject_noise}]
    return [self.name, {'multiplier': self.multiplier, 'residual': self.residual,
                        'inject_noise': self.inject_noise}]


def parse_blocks(blocks, side: str) -> tuple[Block, ...]:
  """Official JSON block list (`[name, int | dict]` pairs) -> resolved `Block`s; values typed
  and bounded (CheckpointFormatError naming the entry otherwise)."""
  allowed = ENCODER_BLOCKS if side == 'encoder' else DECODER_BLOCKS
  key, what = f'{side}_blocks', 'VAE'
  out = []
  for i, entry in enumerate(V.check_list(blocks, key, what)):
    if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str)
        or isinstance(entry[1], bool) or not isinstance(entry[1], (int, dict))):
      raise CheckpointFormatError(f"VAE config {key}[{i}]={entry!r}: expected [block name, "
                                  "num_layers or a JSON object of parameters]")
    name, params = entry
    if name not in allowed:
      raise DataError(f"VAE {side} block {name!r} is not supported (supported: {allowed})")
    params = {'num_layers': params} if isinstance(params, int) else V.mapping(
        params, f"VAE config {key}[{i}] parameters")
    at = f'{key}[{i}]'
    mult = 1
    if name in _DEFAULT_MULTIPLIER[side]:
      mult = V.integer(params, 'multiplier', 1, 64, _DEFAULT_MULTIPLIER[side][name],
                       what=f'VAE {at}')
    residual = side == 'decoder' and name == 'compress_all' and V.boolean(
        params, 'residual', False, what=f'VAE {at}')
    noise = side == 'decoder' and name in ('res_x', 'res_x_y') and V.boolean(
        params, 'inject_noise', False, what=f'VAE {at}')
    layers = V.integer(params, 'num_layers', 1, V.MAX_LAYERS, 1, what=f'VAE {at}') if (
        name == 'res_x') else 1
    out.append(Block(name, layers, mult, residual, noise))
  return tuple(out)
