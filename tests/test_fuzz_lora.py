"""Damaged LoRA files: every one is refused cleanly by the transformer loader.

From a valid tiny kohya-style LoRA (official module names, `.alpha` scalars, PEFT metadata)
for a tiny official single-file transformer we derive deterministic mutations: truncation at
section boundaries, broken header lengths and JSON, entry mutations of each tensor, metadata
(`lora_adapter_metadata`) that is not JSON / not an object / holds bad alphas, and random bit
flips and bytes. Each case must end in an LTXError or OSError naming the LoRA file, within a
few seconds, writing nothing (tests/test_fuzz_readers.py's harness).
"""

import json
import struct

import numpy as np
import pytest
from flax import nnx

from ltx_jax.errors import LoadError
from ltx_jax.models.transformer import OFFICIAL_TABLE, abstract_transformer, load_transformer
from ltx_jax.models.transformer.config import TransformerConfig
from ltx_jax.weights import plan_from_table, write_safetensors
from test_fuzz_readers import TRANSFORMER, expect_clean_refusal, safetensors_bytes

MODULE = 'diffusion_model.transformer_blocks.0.attn1.to_q'


def transformer_file(path):
  """A tiny official single file (random weights) for the fuzz suite's TRANSFORMER config."""
  model = abstract_transformer(TransformerConfig.from_official(TRANSFORMER))
  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  rng = np.random.default_rng(0)
  tensors = {}
  for p, src in plan_from_table(model, OFFICIAL_TABLE).items():
    ours = variables[p].get_value().shape[src.stack:]
    torch = [0] * len(ours)
    for j, k in enumerate(src.perm or range(len(ours))):
      torch[k] = ours[j]
    for key in src.keys:
      tensors['model.diffusion_model.' + key] = rng.normal(0, 0.1, torch).astype(np.float32)
  write_safetensors(path, tensors, {'config': json.dumps({'transformer': TRANSFORMER})})
  return path


def base_lora() -> tuple[dict, bytes]:
  down = np.full((2, 8), 0.1, np.float32)
  up = np.full((8, 2), 0.2, np.float32)
  alpha = np.array(4.0, np.float32)
  data = down.tobytes() + up.tobytes() + alpha.tobytes()
  header = {'__metadata__': {'lora_adapter_metadata': json.dumps({'lora_alpha': 2.0})},
            f'{MODULE}.lora_down.weight': {'dtype': 'F32', 'shape': [2, 8],
                                           'data_offsets': [0, 64]},
            f'{MODULE}.lora_up.weight': {'dtype': 'F32', 'shape': [8, 2],
                                         'data_offsets': [64, 128]},
            f'{MODULE}.alpha': {'dtype': 'F32', 'shape': [], 'data_offsets': [128, 132]}}
  return header, data


def lora_cases() -> list[tuple[str, bytes]]:
  header, data = base_lora()
  good = safetensors_bytes(header, data)
  n = struct.unpack('<Q', good[:8])[0]
  cases = [(f'truncated_{k}', good[:k]) for k in
           sorted({0, 7, 8, 8 + n // 2, 8 + n, 8 + n + 64, len(good) - 1})]
  rest = good[8:]
  for name, length in (('len0', 0), ('len_huge', 1 << 63), ('len_past_end', len(rest) + 1)):
    cases.append((f'header_{name}', struct.pack('<Q', length) + rest))
  for name, raw in (('garbage', b'{' * n), ('list', b'[1, 2]'), ('nested', b'[' * 5000)):
    cases.append((f'header_{name}', struct.pack('<Q', len(raw)) + raw + data))

  def with_header(h) -> bytes:
    return safetensors_bytes(h, data)

  mutations = {
      'dtype_unknown': ('dtype', 'F99'), 'dtype_int': ('dtype', 'I32'),
      'shape_negative': ('shape', [-1, -16]), 'shape_wrong_count': ('shape', [4, 4]),
      'shape_rank3': ('shape', [2, 2, 4]), 'offsets_past_end': ('data_offsets', [0, 4096]),
      'offsets_reversed': ('data_offsets', [64, 0]),
  }
  for key in (k for k in header if k != '__metadata__'):
    short = key.rsplit('.', 2)[-2] if key.endswith('.weight') else 'alpha'
    for name, (field, value) in mutations.items():
      h = json.loads(json.dumps(header))
      h[key][field] = value
      cases.append((f'{short}_{name}', with_header(h)))
    h = json.loads(json.dumps(header))
    del h[key]  # a down without its up, or an up without its down (alpha: still valid)
    if short != 'alpha':
      cases.append((f'{short}_missing', with_header(h)))
  for name, meta in (('not_json', '{not json'), ('list', '[1]'), ('alpha_string', '{"x": 1}'),
                     ('dora', '{"use_dora": true}')):
    h = json.loads(json.dumps(header))
    h['__metadata__'] = {'lora_adapter_metadata': meta}
    if name == 'alpha_string':  # no .alpha tensor: the metadata's alpha is used, and is bad
      del h[f'{MODULE}.alpha']
      h['__metadata__'] = {'lora_adapter_metadata': '{"lora_alpha": "big"}'}
    cases.append((f'metadata_{name}', with_header(h)))
  h = json.loads(json.dumps(header))
  h['diffusion_model.nowhere.lora_A.weight'] = h.pop(f'{MODULE}.lora_down.weight')
  h['diffusion_model.nowhere.lora_B.weight'] = h.pop(f'{MODULE}.lora_up.weight')
  h.pop(f'{MODULE}.alpha')
  cases.append(('module_matches_no_layer', with_header(h)))
  nan = bytearray(good)
  nan[8 + n:8 + n + 4] = np.float32(np.nan).tobytes()
  cases.append(('nan_value', bytes(nan)))
  rng = np.random.default_rng(1)
  for i in range(8):
    flipped = bytearray(good)
    for pos in rng.integers(0, 8 + n, size=3):
      flipped[pos] ^= 1 << int(rng.integers(0, 8))
    cases.append((f'bitflip_{i}', bytes(flipped)))
  for i, size in enumerate((1, 16, 4096)):
    cases.append((f'random_{i}', rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
  return cases


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
  return transformer_file(tmp_path_factory.mktemp('fuzz_lora_model') / 'tiny.safetensors')


def test_valid_lora_loads_both_modes(model_file, tmp_path):
  path = tmp_path / 'valid.safetensors'
  path.write_bytes(safetensors_bytes(*base_lora()))
  for mode in ('merged', 'runtime'):
    model = load_transformer(model_file, loras=path, lora_mode=mode)
    assert [a.name for a in model.lora_adapters] == ['valid']


CASES = lora_cases()


@pytest.mark.parametrize('name,raw', CASES, ids=[c[0] for c in CASES])
def test_damaged_lora(model_file, tmp_path, name, raw):
  path = tmp_path / f'{name}.safetensors'
  path.write_bytes(raw)
  if name == 'module_matches_no_layer':  # one LoadError line: the count and the example
    with pytest.raises(LoadError) as e:
      load_transformer(model_file, loras=path)
    (line,) = str(e.value).splitlines()
    assert str(path) in line and (
        f'1 modules match no layer (e.g. {path.name}: diffusion_model.nowhere.lora_A.weight, '
        'diffusion_model.nowhere.lora_B.weight)') in line, line
    return
  expect_clean_refusal(path, lambda: load_transformer(model_file, loras=path),
                       may_load=name.startswith('bitflip'))
