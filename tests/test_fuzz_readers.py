"""Damaged files and configs: every reader refuses them cleanly.

From valid tiny files (safetensors with official `config` metadata, a T5 GGUF, a converted
orbax checkpoint with its manifest, diffusers config.json files) we derive deterministic
mutations: truncation at every section boundary, header lengths 0 / huge / past the end, headers
that are not JSON or not UTF-8, unknown dtypes, data offsets past the end / reversed / negative /
overlapping, shapes that disagree with the byte count, negative or non-integer shapes, entries of
the wrong JSON type, config values of the wrong type or out of range, empty files, folders named
like files and random bytes. Each case must end in an LTXError (or OSError) whose message names
the file, within a few seconds, without writing anything.
"""

import json
import os
import signal
import struct
from pathlib import Path

import gguf
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from ltx_jax.errors import LTXError
from ltx_jax.models.t5 import loading as t5_loading
from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.transformer import loading as transformer_loading
from ltx_jax.models.vae import loading as vae_loading
from ltx_jax.models.vae.model import init_vae
from ltx_jax.smoke import VAE as SMOKE_VAE
from ltx_jax.sources import resolve_source
from ltx_jax.models.transformer.config import TransformerConfig
from ltx_jax.models.vae.config import VAEConfig
from ltx_jax.weights import load_component, open_safetensors, orbax_io, values, write_safetensors
from ltx_jax.weights.gguf_io import GGUFStore as open_gguf
from ltx_jax.weights.safetensors_io import official_config

SECONDS = 20  # per case: a hang fails the case

TRANSFORMER = dict(num_layers=1, num_attention_heads=2, attention_head_dim=4, in_channels=4,
                   out_channels=4, cross_attention_dim=8, caption_channels=8, norm_eps=1e-6,
                   attention_bias=True, positional_embedding_theta=10000.0,
                   positional_embedding_max_pos=[20, 2048, 2048],
                   activation_fn='gelu-approximate', standardization_norm='rms_norm',
                   qk_norm='rms_norm', norm_elementwise_affine=False,
                   timestep_scale_multiplier=1000)
VAE = dict(_class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
           latent_channels=4, norm_layer='pixel_norm', latent_log_var='uniform',
           use_quant_conv=False, patch_size=2, encoder_base_channels=4, decoder_base_channels=4,
           encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_all_res', {'multiplier': 2}]],
           decoder_blocks=[['compress_all', {'residual': True, 'multiplier': 2}],
                           ['res_x', {'num_layers': 1}]])
DIFFUSERS_TRANSFORMER = dict(_class_name='LTXVideoTransformer3DModel', num_layers=1,
                             num_attention_heads=2, attention_head_dim=4, in_channels=4,
                             out_channels=4, cross_attention_dim=8, caption_channels=8)
DIFFUSERS_VAE = dict(_class_name='AutoencoderKLLTXVideo', in_channels=3, out_channels=3,
                     latent_channels=4, block_out_channels=[4, 8], decoder_block_out_channels=[4, 8],
                     layers_per_block=[1, 1, 1], decoder_layers_per_block=[1, 1, 1],
                     spatio_temporal_scaling=[True, False],
                     decoder_spatio_temporal_scaling=[True, False], patch_size=2,
                     down_block_types=['LTXVideoDownBlock3D'] * 2)
BAD_VALUES = [-1, 0, '4', 4.5, 10 ** 9, True, None, [], {}]


# ------------------------------------------------------------------------------ base files


def safetensors_bytes(header: dict, data: bytes) -> bytes:
  blob = json.dumps(header).encode()
  return struct.pack('<Q', len(blob)) + blob + data


def base_safetensors() -> tuple[dict, bytes]:
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  b = np.ones(4, ml_dtypes.bfloat16)
  c = np.array(7, np.int64)
  data = a.tobytes() + b.tobytes() + c.tobytes()
  header = {'__metadata__': {'config': json.dumps({'transformer': TRANSFORMER, 'vae': VAE})},
            'a': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]},
            'b': {'dtype': 'BF16', 'shape': [4], 'data_offsets': [24, 32]},
            'c': {'dtype': 'I64', 'shape': [], 'data_offsets': [32, 40]}}
  return header, data


def gguf_bytes(tmp: Path) -> bytes:
  path = tmp / 'base.gguf'
  w = gguf.GGUFWriter(str(path), 't5encoder')
  w.add_embedding_length(8)
  w.add_feed_forward_length(12)
  w.add_block_count(1)
  w.add_head_count(2)
  w.add_key_length(4)
  w.add_layer_norm_rms_eps(1e-6)
  w.add_relative_attn_buckets_count(8)
  w.add_tensor('token_embd.weight', np.ones((16, 8), np.float32))
  w.add_tensor('enc.output_norm.weight', np.ones(8, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path.read_bytes()


# ------------------------------------------------------------------------------ mutations


def safetensors_cases() -> list[tuple[str, bytes]]:
  header, data = base_safetensors()
  good = safetensors_bytes(header, data)
  n = struct.unpack('<Q', good[:8])[0]
  cases = [(f'truncated_{k}', good[:k]) for k in
           sorted({0, 1, 4, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, 8 + n + 24,
                   len(good) - 1})]
  rest = good[8:]
  for name, length in (('len0', 0), ('len1', 1), ('len_huge', 1 << 63), ('len_max', 2 ** 64 - 1),
                       ('len_past_end', len(rest) + 1), ('len_short', n - 3)):
    cases.append((f'header_{name}', struct.pack('<Q', length) + rest))
  blob = good[8:8 + n]
  for name, raw in (('garbage', b'{' * n), ('not_utf8', b'\xff\xfe' + blob[2:]),
                    ('list', json.dumps([1, 2]).encode()), ('string', b'"abc"'),
                    ('number', b'12'), ('nested', b'[' * 5000 + b']' * 5000),
                    ('nul', b'\x00' * n)):
    cases.append((f'header_{name}', struct.pack('<Q', len(raw)) + raw + data))

  def with_header(h) -> bytes:
    return safetensors_bytes(h, data)

  entry_mutations = {
      'dtype_unknown': ('dtype', 'F99'), 'dtype_int': ('dtype', 5), 'dtype_none': ('dtype', None),
      'dtype_lower': ('dtype', 'f32'), 'shape_negative': ('shape', [-1, -6]),
      'shape_float': ('shape', [2.0, 3]), 'shape_string': ('shape', '23'),
      'shape_wrong_count': ('shape', [3, 3]), 'shape_none': ('shape', None),
      'shape_bool': ('shape', [True, 6]), 'shape_nested': ('shape', [[2], [3]]),
      'shape_huge': ('shape', [2 ** 40, 2 ** 40]), 'offsets_past_end': ('data_offsets', [0, 4096]),
      'offsets_reversed': ('data_offsets', [24, 0]), 'offsets_negative': ('data_offsets', [-24, 0]),
      'offsets_float': ('data_offsets', [0.0, 24.0]), 'offsets_three': ('data_offsets', [0, 12, 24]),
      'offsets_string': ('data_offsets', '0-24'), 'offsets_huge': ('data_offsets', [2 ** 62, 2 ** 62 + 24]),
  }
  for tensor in ('a', 'b', 'c'):
    for name, (key, value) in entry_mutations.items():
      h = json.loads(json.dumps(header))
      h[tensor][key] = value
      cases.append((f'{tensor}_{name}', with_header(h)))
    for name, value in (('entry_list', [1, 2]), ('entry_string', 'F32'), ('entry_null', None),
                        ('entry_empty', {})):
      h = json.loads(json.dumps(header))
      h[tensor] = value
      cases.append((f'{tensor}_{name}', with_header(h)))
    h = json.loads(json.dumps(header))
    del h[tensor]['dtype']
    cases.append((f'{tensor}_no_dtype', with_header(h)))
  h = json.loads(json.dumps(header))
  h['b']['data_offsets'] = [16, 24]  # overlaps a
  h['b']['dtype'], h['b']['shape'] = 'F32', [2]
  cases.append(('overlapping', with_header(h)))
  for name, meta in (('meta_list', [1]), ('meta_int_value', {'config': 5}),
                     ('meta_nested', {'config': {'a': 1}}), ('meta_string', 'x'),
                     ('config_not_json', {'config': '{not json'}),
                     ('config_list', {'config': '[1, 2]'}),
                     ('config_entry_int', {'config': '{"transformer": 5, "vae": 6}'}),
                     ('config_deep', {'config': '[' * 5000 + ']' * 5000})):
    h = json.loads(json.dumps(header))
    h['__metadata__'] = meta
    cases.append((name, with_header(h)))
  rng = np.random.default_rng(0)
  for i in range(12):
    flipped = bytearray(good)
    for pos in rng.integers(0, 8 + n, size=3):
      flipped[pos] ^= 1 << int(rng.integers(0, 8))
    cases.append((f'bitflip_{i}', bytes(flipped)))
  for i, size in enumerate((1, 8, 16, 100, 4096)):
    cases.append((f'random_{i}', rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
  return cases


def config_cases() -> list[tuple[str, str, dict]]:
  """(component, name, mutated official config) for the metadata of official single files."""
  cases = []
  for comp, base in (('transformer', TRANSFORMER), ('vae', VAE)):
    for key in base:
      if key in ('_class_name',):
        continue
      for i, bad in enumerate(BAD_VALUES):
        cfg = json.loads(json.dumps(base))
        cfg[key] = bad
        cases.append((comp, f'{comp}_{key}_{i}', cfg))
  for side in ('encoder_blocks', 'decoder_blocks'):
    for i, bad in enumerate([[['res_x', -1]], [['res_x', '4']], [['res_x', 10 ** 9]],
                             [['res_x', {'num_layers': 2.5}]], [['nope', 1]], [['res_x']],
                             [[1, 2]], ['res_x'], [['compress_all', {'multiplier': 10 ** 6}]],
                             [['compress_all', {'multiplier': 3}]],
                             [['compress_all', {'residual': 'yes'}]]]):
      cfg = json.loads(json.dumps(VAE))
      cfg[side] = bad
      cases.append(('vae', f'vae_{side}_{i}', cfg))
  return cases


def diffusers_cases() -> list[tuple[str, str, dict]]:
  cases = []
  for comp, base in (('transformer', DIFFUSERS_TRANSFORMER), ('vae', DIFFUSERS_VAE)):
    for key in base:
      if key == '_class_name':
        continue
      for i, bad in enumerate(BAD_VALUES):
        cfg = dict(base, **{key: bad})
        cases.append((comp, f'diffusers_{comp}_{key}_{i}', cfg))
  cases.append(('vae', 'diffusers_vae_short_lists', dict(DIFFUSERS_VAE, layers_per_block=[1])))
  cases.append(('vae', 'diffusers_vae_bad_ratio', dict(DIFFUSERS_VAE, block_out_channels=[4, 6])))
  return cases


# ------------------------------------------------------------------------------ harness


class Timeout(Exception):
  pass


def _alarm(*_):
  raise Timeout()


def expect_clean_refusal(path: Path, action, *, named: str | None = None,
                         may_load: bool = False) -> None:
  """`action()` must raise an LTXError or OSError naming the file, in time, writing nothing
  (may_load: or succeed, for random damage that can leave a valid file)."""
  folder = path if path.is_dir() else path.parent
  before = sorted(p.name for p in folder.rglob('*'))
  old = signal.signal(signal.SIGALRM, _alarm)
  signal.alarm(SECONDS)
  try:
    action()
  except (LTXError, OSError) as e:
    text = str(e)
    assert (named or path.name) in text, f"message does not name the file: {text}"
    assert '\n' not in text.split(' missing, ')[0], text
  except Timeout:
    pytest.fail(f"{path.name}: no answer within {SECONDS} s")
  else:
    assert may_load, f"{path.name}: accepted"
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
  assert sorted(p.name for p in folder.rglob('*')) == before, 'files were written'


def read_everything(path: Path) -> None:
  store = open_safetensors(path)
  for k in store.keys():
    store.read(k)
    store.read(k, np.float16)
  with values.in_file(path):
    TransformerConfig.from_official(official_config(store, 'transformer'))
    VAEConfig.from_official(official_config(store, 'vae'))


@pytest.fixture(scope='module')
def work(tmp_path_factory):
  return tmp_path_factory.mktemp('fuzz')


SAFETENSORS = safetensors_cases()


def test_valid_bases_load(work):
  header, data = base_safetensors()
  path = work / 'valid.safetensors'
  path.write_bytes(safetensors_bytes(header, data))
  read_everything(path)
  assert open_gguf(_gguf(work)).shape('token_embd.weight') == (16, 8)


@pytest.mark.parametrize('name,raw', SAFETENSORS, ids=[c[0] for c in SAFETENSORS])
def test_safetensors(work, name, raw):
  path = work / f'{name}.safetensors'
  path.write_bytes(raw)
  random = name.startswith('bitflip')  # flips in names or values can leave a valid file
  expect_clean_refusal(path, lambda: read_everything(path), may_load=random)
  # the same bytes as an official single file given to the loaders and the source resolver
  expect_clean_refusal(path, lambda: vae_loading.load_vae(path))
  expect_clean_refusal(path, lambda: resolve_source(path, allow_custom=True))


def test_empty_file_and_folder_named_like_a_file(work):
  empty = work / 'empty.safetensors'
  empty.write_bytes(b'')
  expect_clean_refusal(empty, lambda: read_everything(empty))
  folder = work / 'folder.safetensors'
  folder.mkdir()
  expect_clean_refusal(folder, lambda: read_everything(folder))
  expect_clean_refusal(folder, lambda: transformer_loading.load_transformer(folder))
  gfolder = work / 'folder.gguf'
  gfolder.mkdir()
  expect_clean_refusal(gfolder, lambda: open_gguf(gfolder))
  empty_gguf = work / 'empty.gguf'
  empty_gguf.write_bytes(b'')
  expect_clean_refusal(empty_gguf, lambda: open_gguf(empty_gguf))


CONFIGS = config_cases()


@pytest.mark.parametrize('comp,name,cfg', CONFIGS, ids=[c[1] for c in CONFIGS])
def test_official_config_values(work, comp, name, cfg):
  header, data = base_safetensors()
  meta = {'transformer': TRANSFORMER, 'vae': VAE, comp: cfg}
  header['__metadata__'] = {'config': json.dumps(meta)}
  path = work / f'{name}.safetensors'
  path.write_bytes(safetensors_bytes(header, data))
  loading = transformer_loading if comp == 'transformer' else vae_loading
  expect_clean_refusal(path, lambda: load_component(path, loading.COMPONENT))


DIFFUSERS = diffusers_cases()


@pytest.mark.parametrize('comp,name,cfg', DIFFUSERS, ids=[c[1] for c in DIFFUSERS])
def test_diffusers_config_values(work, comp, name, cfg):
  folder = work / name / comp
  folder.mkdir(parents=True)
  (folder / 'config.json').write_text(json.dumps(cfg))
  write_safetensors(folder / 'diffusion_pytorch_model.safetensors',
                    {'x': np.zeros(2, np.float32)})
  loading = transformer_loading if comp == 'transformer' else vae_loading
  expect_clean_refusal(folder, lambda: load_component(folder, loading.COMPONENT),
                       named=str(folder.parent.name))


def test_diffusers_config_not_json(work):
  for name, raw in (('garbage', b'{nope'), ('not_utf8', b'\xff\xfe{}'), ('list', b'[1]'),
                    ('empty', b'')):
    folder = work / f'cfg_{name}' / 'transformer'
    folder.mkdir(parents=True)
    (folder / 'config.json').write_bytes(raw)
    write_safetensors(folder / 'diffusion_pytorch_model.safetensors',
                      {'x': np.zeros(2, np.float32)})
    expect_clean_refusal(folder, lambda: transformer_loading.load_transformer(folder),
                         named=f'cfg_{name}')


def _gguf(work: Path) -> Path:
  path = work / 'valid.gguf'
  if not path.exists():
    gguf_bytes(work)
    (work / 'base.gguf').rename(path)
  return path


def gguf_cases(good: bytes) -> list[tuple[str, bytes]]:
  cases = [(f'truncated_{k}', good[:k]) for k in
           sorted({0, 3, 4, 8, 16, 24, 40, 64, 100, 200, len(good) // 2, len(good) - 100,
                   len(good) - 1})]
  for name, offset, value in (('version_0', 4, struct.pack('<I', 0)),
                              ('version_big', 4, struct.pack('<I', 99)),
                              ('tensor_count_huge', 8, struct.pack('<Q', 1 << 60)),
                              ('kv_count_huge', 16, struct.pack('<Q', 1 << 60)),
                              ('magic', 0, b'XXXX')):
    raw = bytearray(good)
    raw[offset:offset + len(value)] = value
    cases.append((name, bytes(raw)))
  # the first key's string length, then every 8-byte field of the header region made huge
  for pos in range(24, 320, 8):
    raw = bytearray(good)
    raw[pos:pos + 8] = struct.pack('<Q', (1 << 62) + pos)
    cases.append((f'field_{pos}_huge', bytes(raw)))
  rng = np.random.default_rng(1)
  for i in range(10):
    raw = bytearray(good)
    for pos in rng.integers(0, 320, size=4):
      raw[pos] = int(rng.integers(0, 256))
    cases.append((f'scramble_{i}', bytes(raw)))
  for i, size in enumerate((4, 64, 1024)):
    cases.append((f'random_{i}', b'GGUF' + rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
  return cases


def _gguf_cases():
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    return gguf_cases(gguf_bytes(Path(d)))


GGUF = _gguf_cases()


def load_t5(path: Path) -> None:
  store = open_gguf(path)
  for k in store.keys():
    store.read(k)
  load_component(path, t5_loading.COMPONENT)


@pytest.mark.parametrize('name,raw', GGUF, ids=[c[0] for c in GGUF])
def test_gguf(work, name, raw):
  path = work / f'{name}.gguf'
  path.write_bytes(raw)
  try:
    load_t5(path)
  except (LTXError, OSError) as e:
    assert path.name in str(e), str(e)
    return
  # some mutations only touch values a T5 file may hold (a different eps, an extra byte past the
  # tensors): those load; everything else must have been refused above.
  assert name.startswith(('scramble', 'field', 'truncated')), name


# ---------------------------------------------------------------------------------- orbax


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp('orbax') / 'ckpt'
  root.mkdir()
  model = init_vae(SMOKE_VAE)
  orbax_io.write_model(root / 'vae', model)
  manifest = {'format': orbax_io.FORMAT,
              'release': {'version': 'custom', 'size': 'custom', 'variant': 'dev'},
              'components': {'vae': {'config': orbax_io.config_to_json(SMOKE_VAE),
                                     'param_dtype': 'f32'}}}
  (root / orbax_io.MANIFEST).write_text(json.dumps(manifest))
  load_component(root, vae_loading.COMPONENT)  # the base is valid
  return root, manifest


def manifest_cases(manifest: dict) -> list[tuple[str, object]]:
  cases = [('not_json', '{nope'), ('list', [1]), ('format', dict(manifest, format='x')),
           ('components_list', dict(manifest, components=[1])),
           ('components_null', dict(manifest, components=None)),
           ('release_string', dict(manifest, release='0.9.8')),
           ('config_string', dict(manifest, components={'vae': {'config': 'x'}}))]
  vae = manifest['components']['vae']['config']
  for key in ('latent_channels', 'patch_size', 'encoder_base_channels', 'scaling_factor',
              'timestep_conditioning', 'latent_log_var', 'encoder_blocks'):
    for i, bad in enumerate([-1, '4', 10 ** 9, 2.5, [1], {'a': 1}]):
      if key == 'scaling_factor' and bad == 2.5:
        continue  # a valid scaling factor
      cfg = dict(vae, **{key: bad})
      cases.append((f'vae_{key}_{i}', dict(manifest, components={'vae': {'config': cfg}})))
  for i, bad in enumerate([{'name': 'res_x', 'num_layers': -1}, {'name': 'res_x', 'num_layers': '4'},
                           {'name': 'res_x', 'num_layers': 10 ** 9}, {'name': 'zzz'},
                           {'name': 'res_x', 'multiplier': 0}]):
    cfg = dict(vae, encoder_blocks=[bad])
    cases.append((f'vae_block_{i}', dict(manifest, components={'vae': {'config': cfg}})))
  return cases


def test_orbax_manifest(converted, tmp_path):
  root, manifest = converted
  cases = manifest_cases(manifest) + [('not_utf8', b'\xff\xfe'), ('empty', b'')]
  assert len(cases) > 40
  for name, value in cases:
    copy = tmp_path / name
    copy.mkdir()
    (copy / 'vae').symlink_to(root / 'vae')
    raw = value if isinstance(value, bytes) else (
        value.encode() if isinstance(value, str) else json.dumps(value).encode())
    (copy / orbax_io.MANIFEST).write_bytes(raw)
    expect_clean_refusal(copy, lambda: load_component(copy, vae_loading.COMPONENT),
                         named=name)


def test_orbax_damaged_files(converted, tmp_path):
  root, _ = converted
  import shutil
  files = sorted(p.relative_to(root / 'vae') for p in (root / 'vae').rglob('*') if p.is_file())
  assert files
  count = 0
  for i, rel in enumerate(files):
    for how in ('empty', 'garbage', 'missing'):
      copy = tmp_path / f'{i}_{how}'
      shutil.copytree(root, copy)
      target = copy / 'vae' / rel
      if how == 'missing':
        target.unlink()
      else:
        target.write_bytes(b'' if how == 'empty' else b'\x00garbage' * 7)
      try:
        load_component(copy, vae_loading.COMPONENT)
      except (LTXError, OSError) as e:
        assert copy.name in str(e), str(e)
        count += 1
      # files orbax does not need for this restore (e.g. commit markers) may go unnoticed
  assert count >= len(files)
