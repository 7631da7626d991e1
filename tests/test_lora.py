"""LoRA adapters on the DiT against diffusers' own PEFT loading (`load_lora_weights` +
`set_adapters`) and, for layouts diffusers does not read, against an explicit merge of the
reference weights; merged vs runtime modes; strictness."""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import randomize_torch_module, rel_l2
from ltx_jax import load_transformer
from ltx_jax.errors import CheckpointFormatError, LoadError, UsageError
from ltx_jax.nn import lora_scales, set_lora_scales
from ltx_jax.weights import write_safetensors
from test_transformer import GRID, SCALE, diffusers_config, inputs

TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2']
OFFICIAL_NAMES = {'proj_in': 'patchify_proj', 'time_embed': 'adaln_single'}


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  from diffusers import LTXVideoTransformer3DModel
  tmp = tmp_path_factory.mktemp('lora')
  ref = LTXVideoTransformer3DModel(**diffusers_config(2, 8, layers=3)).eval()
  randomize_torch_module(ref, seed=5, std=0.1)
  ref.save_pretrained(tmp / 'transformer')
  return tmp


def fresh_reference(model_dir):
  from diffusers import LTXVideoTransformer3DModel
  return LTXVideoTransformer3DModel.from_pretrained(model_dir / 'transformer').eval()


def peft_lora(model_dir, path, *, seed, r, alpha, targets=TARGETS, rank_pattern=None,
              alpha_pattern=None, rslora=False):
  """A LoRA written by diffusers' own saver (PEFT layout + lora_adapter_metadata)."""
  from diffusers import LTXPipeline
  from peft import LoraConfig
  from peft.utils import get_peft_model_state_dict
  model = fresh_reference(model_dir)
  config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False,
                      rank_pattern=rank_pattern or {}, alpha_pattern=alpha_pattern or {},
                      use_rslora=rslora)
  model.add_adapter(config, adapter_name='x')
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'lora_' in name:
        p.normal_(0, 0.3)
  state = get_peft_model_state_dict(model, adapter_name='x')
  meta = config.to_dict()
  LTXPipeline.save_lora_weights(path.parent, transformer_lora_layers=state,
                                weight_name=path.name, transformer_lora_adapter_metadata=meta)
  return path


def diffusers_with_loras(model_dir, files, weights):
  """diffusers' LTXPipeline.load_lora_weights + set_adapters on a fresh reference model."""
  from diffusers.loaders import LTXVideoLoraLoaderMixin

  class Holder(LTXVideoLoraLoaderMixin):  # the pipeline, as far as LoRA loading reads it
    hf_device_map = None
    components = {}
    def __init__(self, transformer):
      self.transformer = transformer

  holder = Holder(fresh_reference(model_dir))
  names = [f'a{i}' for i in range(len(files))]
  for name, f in zip(names, files):
    holder.load_lora_weights(str(f), adapter_name=name)
  holder.transformer.set_adapters(names, weights=weights)
  return holder.transformer


def compare(model, ref, seed=1):
  d = inputs(seed)
  with torch.no_grad():
    want = ref(hidden_states=torch.from_numpy(d['x']),
               encoder_hidden_states=torch.from_numpy(d['ctx']),
               timestep=torch.from_numpy(d['t']), encoder_attention_mask=torch.from_numpy(
                   d['mask']), num_frames=GRID[0], height=GRID[1], width=GRID[2],
               rope_interpolation_scale=SCALE, return_dict=False)[0].numpy()
  got = model(jnp.asarray(d['x']), jnp.asarray(d['ctx']), jnp.asarray(d['t']),
              jnp.asarray(d['mask']), num_frames=GRID[0], height=GRID[1], width=GRID[2],
              rope_interpolation_scale=jnp.array(SCALE))
  return rel_l2(got, want), want


def explicit_merge(model_dir, files_and_scales):
  """The reference weights with W += s * f * up @ down (and diffs) applied by hand; `files_and
  _scales`: [(diffusers-named {module: (down, up, factor)}, scale)]."""
  ref = fresh_reference(model_dir)
  params = dict(ref.named_parameters())
  with torch.no_grad():
    for mods, s in files_and_scales:
      for module, (down, up, factor) in mods.items():
        params[module + '.weight'] += torch.from_numpy(s * factor * (up @ down))
  return ref


@pytest.fixture(scope='module')
def two_peft(model_dir, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('peft')
  a = peft_lora(model_dir, tmp / 'a.safetensors', seed=1, r=4, alpha=3.0,
                rank_pattern={'ff.net.0.proj': 2}, alpha_pattern={'attn2.to_k': 5.0})
  b = peft_lora(model_dir, tmp / 'b.safetensors', seed=2, r=3, alpha=6.0,
                targets=['to_q', 'to_v', 'proj_in', 'proj_out', 'linear_1'])
  return a, b


def test_peft_one_adapter(model_dir, two_peft, highest_precision):
  a, _ = two_peft
  meta = json.loads(__import__('safetensors').safe_open(str(a), 'np').metadata()[
      'lora_adapter_metadata'])
  assert meta['transformer.lora_alpha'] == 3.0  # diffusers' saver: component-prefixed keys
  ref = diffusers_with_loras(model_dir, [a], [0.8])
  model = load_transformer(model_dir, loras=[(a, 0.8)])
  err, want = compare(model, ref)
  base, _ = compare(load_transformer(model_dir), ref)
  print(f"PEFT one adapter: rel L2 {err:.2e} (without the adapter {base:.2e})")
  assert err < 1e-5 and base > 1e-2, (err, base)  # the adapter matters and matches
  assert [x.name for x in model.lora_adapters] == ['a'] and model.lora_adapters[0].scale == 0.8
  assert len(model.lora_adapters[0].sha256) == 64


def test_peft_two_adapters_negative_weight(model_dir, two_peft, highest_precision):
  a, b = two_peft
  ref = diffusers_with_loras(model_dir, [a, b], [0.7, -0.4])
  err, _ = compare(load_transformer(model_dir, loras=[(a, 0.7), (b, -0.4)]), ref)
  print(f"PEFT two adapters (0.7, -0.4): rel L2 {err:.2e}")
  assert err < 1e-5, err


def test_runtime_equals_merged_and_compiles_once(model_dir, two_peft, highest_precision):
  a, b = two_peft
  runtime = load_transformer(model_dir, loras=[(a, 0.7), (b, -0.4)], lora_mode='runtime')
  d = inputs(3)

  @jax.jit
  def run(graph, state, x, ctx, t, mask):
    return nnx.merge(graph, state)(x, ctx, t, mask, num_frames=GRID[0], height=GRID[1],
                                   width=GRID[2], rope_interpolation_scale=jnp.array(SCALE))

  args = [jnp.asarray(d[k]) for k in ('x', 'ctx', 't', 'mask')]
  outs = {}
  for scales in ((0.7, -0.4), (1.2, 0.0), (0.0, 0.5)):
    set_lora_scales(runtime, scales)
    outs[scales] = run(*nnx.split(runtime), *args)
  assert run._cache_size() == 1  # three scale settings, one compilation
  assert lora_scales(runtime) == {'a': 0.0, 'b': 0.5}
  for scales, got in outs.items():
    merged = load_transformer(model_dir, loras=list(zip((a, b), scales)))
    want = merged(*args, num_frames=GRID[0], height=GRID[1], width=GRID[2],
                  rope_interpolation_scale=jnp.array(SCALE))
    print(f"runtime vs merged at {scales}: rel L2 {rel_l2(got, want):.2e}")
    assert rel_l2(got, want) < 1e-5, scales
  set_lora_scales(runtime, {'b': 0.25})
  assert lora_scales(runtime) == {'a': 0.0, 'b': 0.25}
  with pytest.raises(UsageError, match="unknown LoRA adapter name"):
    set_lora_scales(runtime, {'c': 1.0})
  with pytest.raises(UsageError, match="3 LoRA scales given for 2 adapters"):
    set_lora_scales(runtime, (1, 2, 3))


def peft_tensors(path):
  from ltx_jax.weights import open_safetensors
  store = open_safetensors(path)
  return {k: np.array(store.read(k)) for k in store.keys()}


def test_official_trainer_layout(model_dir, two_peft, tmp_path, highest_precision):
  """`diffusion_model.` prefix, alpha = r: diffusers converts it (prefix swap) and loads it."""
  _, b = two_peft
  tensors = {k.replace('transformer.', 'diffusion_model.', 1): v
             for k, v in peft_tensors(b).items()}
  path = tmp_path / 'comfy.safetensors'
  write_safetensors(path, tensors)
  ref = diffusers_with_loras(model_dir, [path], [1.3])
  err, _ = compare(load_transformer(model_dir, loras=[(path, 1.3)]), ref)
  print(f"official trainer layout: rel L2 {err:.2e}")
  assert err < 1e-5, err


def random_modules(model_dir, seed, targets, rank):
  """{diffusers module name: (down [r, in], up [out, r])} for every Linear matching targets."""
  rng = np.random.default_rng(seed)
  ref = fresh_reference(model_dir)
  out = {}
  for name, module in ref.named_modules():
    if isinstance(module, torch.nn.Linear) and any(name.endswith(t) for t in targets):
      o, i = module.weight.shape
      out[name] = (rng.normal(0, 0.3, (rank, i)).astype(np.float32),
                   rng.normal(0, 0.3, (o, rank)).astype(np.float32))
  return out


def official_name(module):
  for a, b in OFFICIAL_NAMES.items():
    if module.startswith(a + '.') or module == a:
      return b + module[len(a):]
  return module


def test_kohya_layout_with_official_names(model_dir, tmp_path, highest_precision):
  """lora_down / lora_up + .alpha scalars, official module names (patchify_proj, adaln_single),
  written both `diffusion_model.<dotted>` and `lora_unet_<underscored>`."""
  mods = random_modules(model_dir, 7, ['proj_in', 'time_embed.linear', 'attn1.to_k',
                                       'ff.net.2', 'linear_2'], rank=3)
  alphas = {m: float(1 + i) for i, m in enumerate(mods)}
  dotted, underscored = {}, {}
  for m, (down, up) in mods.items():
    name = official_name(m)
    for table, key in ((dotted, 'diffusion_model.' + name),
                       (underscored, ('lora_unet_' if m.startswith('t') else 'lora_transformer_')
                                     + name.replace('.', '_'))):
      table[key + '.lora_down.weight'] = down
      table[key + '.lora_up.weight'] = up
      table[key + '.alpha'] = np.array(alphas[m], np.float32)
  want_mods = {m: (d, u, alphas[m] / 3) for m, (d, u) in mods.items()}
  ref = explicit_merge(model_dir, [(want_mods, 0.6)])
  for i, tensors in enumerate((dotted, underscored)):
    path = tmp_path / f'kohya{i}.safetensors'
    write_safetensors(path, tensors)
    err, _ = compare(load_transformer(model_dir, loras=[(path, 0.6)]), ref)
    print(f"kohya layout {('dotted', 'flattened')[i]}: rel L2 {err:.2e}")
    assert err < 1e-5, (i, err)


def test_unmatched_and_misfit_keys(model_dir, two_peft, tmp_path):
  tensors = peft_tensors(two_peft[0])
  tensors['transformer.transformer_blocks.0.attn9.to_q.lora_A.weight'] = np.zeros((4, 16),
                                                                                 np.float32)
  tensors['transformer.transformer_blocks.0.attn9.to_q.lora_B.weight'] = np.zeros((16, 4),
                                                                                 np.float32)
  key = 'transformer.transformer_blocks.1.attn1.to_q.lora_B.weight'
  tensors[key] = np.zeros((17, 4), np.float32)
  path = tmp_path / 'bad.safetensors'
  write_safetensors(path, tensors, {'lora_adapter_metadata': json.dumps({'lora_alpha': 3.0})})
  with pytest.raises(LoadError) as e:
    load_transformer(model_dir, loras=path)
  text = str(e.value)
  assert 'attn9.to_q.lora_A.weight' in text and key in text and '[17, 16]' in text
  with pytest.warns(UserWarning, match='attn9'):
    model = load_transformer(model_dir, loras=path, lora_strict=False)
  assert model.lora_adapters[0].name == 'bad'


@pytest.mark.parametrize('value, error, match', [
    ((('x.safetensors', float('nan')),), UsageError, 'LoRA scale nan'),
    ((('x.safetensors', 'big'),), UsageError, "LoRA scale 'big'"),
    (42, UsageError, 'loras=42'),
    ('missing.safetensors', FileNotFoundError, 'missing.safetensors'),
])
def test_bad_lora_arguments(model_dir, tmp_path, value, error, match):
  write_safetensors(tmp_path / 'x.safetensors', {'a.lora_A.weight': np.zeros((1, 2), np.float32),
                                                 'a.lora_B.weight': np.zeros((2, 1), np.float32)})
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(tmp_path)
    with pytest.raises(error, match=match):
      load_transformer(model_dir, loras=value)
  with pytest.raises(UsageError, match="lora_mode='fused'"):
    load_transformer(model_dir, loras=tmp_path / 'x.safetensors', lora_mode='fused')


@pytest.mark.parametrize('tensors, match', [
    ({'m.lora_A.weight': np.zeros((2, 16), np.float32)}, 'no matching up'),
    ({'m.lora_A.weight': np.zeros((2, 16), np.float32),
      'm.lora_B.weight': np.zeros((16, 3), np.float32)}, 'no low-rank pair'),
    ({'m.lora_A.weight': np.zeros((2, 16), np.float32), 'm.dora_scale': np.zeros(16,
                                                                                 np.float32)},
     'DoRA'),
    ({'m.weight': np.zeros((2, 16), np.float32)}, 'no LoRA tensor'),
    ({'m.lora_A.weight': np.zeros((2, 16), np.int32),
      'm.lora_B.weight': np.zeros((16, 2), np.float32)}, 'not a float tensor'),
])
def test_damaged_lora_files(model_dir, tmp_path, tensors, match):
  path = tmp_path / 'damaged.safetensors'
  write_safetensors(path, tensors)
  with pytest.raises(CheckpointFormatError, match=match) as e:
    load_transformer(model_dir, loras=path)
  assert str(path) in str(e.value)


def test_peft_rslora_and_lora_bias(model_dir, tmp_path, highest_precision):
  """use_rslora (alpha / sqrt(r)) and lora_bias (lora_B.bias) from the metadata, as PEFT."""
  from diffusers import LTXPipeline
  from peft import LoraConfig
  from peft.utils import get_peft_model_state_dict
  model = fresh_reference(model_dir)
  config = LoraConfig(r=4, lora_alpha=2.0, target_modules=['to_k', 'ff.net.2', 'proj_out'],
                      init_lora_weights=False, use_rslora=True, lora_bias=True)
  model.add_adapter(config, adapter_name='x')
  torch.manual_seed(9)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'lora_' in name:
        p.normal_(0, 0.3)
  state = get_peft_model_state_dict(model, adapter_name='x')
  assert any(k.endswith('lora_B.bias') for k in state)
  LTXPipeline.save_lora_weights(tmp_path, transformer_lora_layers=state,
                                weight_name='rs.safetensors',
                                transformer_lora_adapter_metadata=config.to_dict())
  path = tmp_path / 'rs.safetensors'
  ref = diffusers_with_loras(model_dir, [path], [0.9])
  err, _ = compare(load_transformer(model_dir, loras=[(path, 0.9)]), ref)
  print(f"PEFT rsLoRA + lora_bias: rel L2 {err:.2e}")
  assert err < 1e-5, err
  with pytest.raises(UsageError, match="lora_mode='merged'"):
    load_transformer(model_dir, loras=path, lora_mode='runtime')


def test_fp8_storage_merges_in_f32_then_casts(model_dir, two_peft, tmp_path):
  """fp8 weights: merged in f32 from the file's values, then cast (range-checked)."""
  a, _ = two_peft
  f32 = load_transformer(model_dir, loras=[(a, 0.5)])
  fp8 = load_transformer(model_dir, loras=[(a, 0.5)], param_dtype='fp8')
  got = np.asarray(fp8.blocks.attn1.to_q.kernel[...])
  assert got.dtype == np.dtype(jnp.float8_e4m3fn)
  want = np.asarray(f32.blocks.attn1.to_q.kernel[...]).astype(jnp.float8_e4m3fn)
  np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
  tensors = peft_tensors(a)
  tensors['transformer.transformer_blocks.0.attn1.to_q.lora_B.weight'] *= 1e5
  big = tmp_path / 'big.safetensors'
  write_safetensors(big, tensors, {'lora_adapter_metadata': json.dumps({'lora_alpha': 3.0})})
  with pytest.raises(LoadError, match=r'transformer_blocks.0.attn1.to_q.weight: weights up to'):
    load_transformer(model_dir, loras=big, param_dtype='fp8')


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
  """A whole tiny diffusers repo (tests/builders.py) and two LoRAs for its transformer."""
  from builders import tiny_repo
  root = tmp_path_factory.mktemp('repo')
  tiny_repo(root, seed=3)
  a = peft_lora(root, root / 'la.safetensors', seed=4, r=3, alpha=5.0)
  b = peft_lora(root, root / 'lb.safetensors', seed=5, r=2, alpha=2.0,
                targets=['to_v', 'proj_in', 'linear_2'])
  return root, a, b


def test_converted_checkpoint_and_model_in_memory(repo, tmp_path, highest_precision):
  """A tools/convert.py checkpoint merges on the device; `add_loras` adds to a loaded model;
  both equal merging while reading the diffusers files."""
  from builders import LATENT, TEXT_DIM
  from ltx_jax import add_loras
  from ltx_jax.sources import resolve_source
  from ltx_jax.weights.convert import convert
  root, a, b = repo
  loras = [(a, 0.7), (b, -0.4)]
  convert(resolve_source(root, allow_custom=True), tmp_path / 'conv', dtype='f32',
          components=['transformer'], progress=False, log=lambda s: None)
  d = inputs(4, dim_text=TEXT_DIM, channels=LATENT)
  args = [jnp.asarray(d[k]) for k in ('x', 'ctx', 't', 'mask')]
  kw = dict(num_frames=GRID[0], height=GRID[1], width=GRID[2],
            rope_interpolation_scale=jnp.array(SCALE))
  ref = load_transformer(root, loras=loras)(*args, **kw)
  assert rel_l2(load_transformer(root)(*args, **kw), ref) > 1e-2
  for mode, tol in (('merged', 1e-6), ('runtime', 1e-5)):
    got = load_transformer(tmp_path / 'conv', loras=loras, lora_mode=mode)(*args, **kw)
    assert rel_l2(got, ref) < tol, mode
  assert rel_l2(add_loras(load_transformer(root), loras)(*args, **kw), ref) < 1e-6
  runtime = add_loras(load_transformer(root), loras, lora_mode='runtime')
  assert rel_l2(runtime(*args, **kw), ref) < 1e-5
  assert [x.name for x in runtime.lora_adapters] == ['la', 'lb']
  with pytest.raises(UsageError, match='already has runtime LoRA adapters'):
    add_loras(runtime, [a], lora_mode='runtime')


def test_pipeline_runtime_scales_one_compile(repo, highest_precision):
  """`LTXPipeline.from_pretrained(loras=..., lora_mode='runtime')`: scale changes between
  generations reuse the compiled loop and equal the merged pipeline at those scales."""
  from ltx_jax import LTXPipeline
  from ltx_jax.sampling import loop as loop_lib
  root, a, b = repo
  call = dict(prompt='a red fox', height=32, width=32, num_frames=9, num_inference_steps=2,
              guidance_scale=3.0, max_sequence_length=16, seed=0, output_type='latent',
              progress=False)
  pipe = LTXPipeline.from_pretrained(root, allow_custom=True, loras=[(a, 1.0), (b, 0.5)],
                                     lora_mode='runtime')
  before = loop_lib.denoise_jit._cache_size()
  runs = {}
  for scales in ((1.0, 0.5), (0.0, -1.0)):
    pipe.set_lora_scales(scales)
    runs[scales] = np.asarray(pipe(**call).latents)
  assert loop_lib.denoise_jit._cache_size() == before + 1
  assert [(x.name, x.scale) for x in pipe.lora_adapters] == [('la', 0.0), ('lb', -1.0)]
  for scales, got in runs.items():
    merged = LTXPipeline.from_pretrained(root, allow_custom=True,
                                         loras=list(zip((a, b), scales)))
    err = rel_l2(got, np.asarray(merged(**call).latents))
    print(f"pipeline runtime vs merged at {scales}: latents rel L2 {err:.2e}")
    assert err < 1e-5, scales


def test_cli_records_adapters_and_refuses_bad_ones(tmp_path):
  """--config.loras on the smoke model: the sidecar records file, sha256, scale; bad
  values are refused in one line before anything loads."""
  import hashlib
  from builders import random_lora
  from ltx_jax import smoke
  from test_cli import generate
  lora = random_lora(tmp_path / 'style.safetensors', smoke.TRANSFORMER, rank=2, seed=1)
  out_dir = tmp_path / 'out'
  _, err, rc = generate(f'--config.output_dir={out_dir}',
                        f"--config.loras=(('{lora}', -0.5),)")
  assert rc == 0, err
  (video,) = out_dir.glob('*.mp4')
  meta = json.loads(video.with_suffix('.json').read_text())
  (record,) = meta['loras']
  assert record.pop('modules_applied') > 0
  assert record == {'name': 'style', 'path': str(lora), 'scale': -0.5,
                    'sha256': hashlib.sha256(lora.read_bytes()).hexdigest(),
                    'baked_in': False, 'applied': True}
  for value, message in ((f'(("{lora}", "x"),)', 'expected a path or (path, finite scale)'),
                         (f'(("{lora}", 1)', 'is not a literal'),
                         (str(tmp_path / 'nope.safetensors'), 'does not exist')):
    _, err, rc = generate(f'--config.output_dir={tmp_path / "refused"}',
                          f'--config.loras={value}')
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and message in lines[0], err


MESH_SCRIPT = r'''
import json, sys
import jax, numpy as np
from ltx_jax import LTXPipeline
from ltx_jax.sharding import make_mesh
root, a, b, out = sys.argv[1:]
call = dict(prompt=['a red fox', 'a blue boat'], height=32, width=32, num_frames=9,
            num_inference_steps=2, guidance_scale=3.0, max_sequence_length=16, seed=0,
            output_type='latent', progress=False)
mesh = make_mesh(data=1, fsdp=2, tensor=2, context=1)
with jax.default_matmul_precision('highest'):
  sharded = LTXPipeline.from_pretrained(root, allow_custom=True, mesh=mesh,
                                        loras=[(a, 0.6), (b, -0.3)], lora_mode='runtime')
  got = np.asarray(sharded(**call).latents)
  sharded.set_lora_scales((1.0, 0.4))
  got2 = np.asarray(sharded(**call).latents)
  lora = sharded.transformer.blocks.attn1.to_q.lora
  specs = {k: list(getattr(lora, k)[...].sharding.spec) for k in ('a', 'b')}
  one = LTXPipeline.from_pretrained(root, allow_custom=True, loras=[(a, 0.6), (b, -0.3)])
  want = np.asarray(one(**call).latents)
  one2 = LTXPipeline.from_pretrained(root, allow_custom=True, loras=[(a, 1.0), (b, 0.4)])
  want2 = np.asarray(one2(**call).latents)
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
json.dump(dict(err=rel(got, want), err2=rel(got2, want2), specs=specs), open(out, 'w'))
'''


def test_runtime_adapters_on_a_mesh(repo, tmp_path):
  """Runtime adapters on a fsdp=2 x tensor=2 mesh of 4 simulated devices: factors sharded
  like their kernels, results equal the merged single-device pipeline at two scale settings."""
  import os
  import subprocess
  import sys
  root, a, b = repo
  out = tmp_path / 'mesh.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.run([sys.executable, '-c', MESH_SCRIPT, str(root), str(a), str(b), str(out)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['err'] < 1e-5 and result['err2'] < 1e-5, result
  # to_q kernel ('layers', 'embed', 'heads') -> a ('layers', 'embed', None), b (.., None, 'heads')
  assert result['specs'] == {'a': [None, 'fsdp', None], 'b': [None, None, 'tensor']}, result


MEMORY_SCRIPT = r'''
import sys
import jax
from ltx_jax import load_transformer
folder, lora = sys.argv[1:]
model = load_transformer(folder, loras=[(lora, 0.5)] if lora != '-' else None)
jax.block_until_ready(jax.tree.leaves(model))
# VmHWM: this process image's peak (ru_maxrss would carry the forking parent's over exec)
hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print(int(hwm.split()[1]) * 1024)
'''


def test_merging_costs_no_second_copy(tmp_path):
  """Peak host memory (VmHWM, CPU backend: the weights live in host memory too) loading a
  ~270 MB f32 model with a rank-16 LoRA on every linear layer, against loading it plain."""
  import os
  import subprocess
  import sys
  from diffusers import LTXVideoTransformer3DModel
  from builders import random_lora
  from ltx_jax.models.transformer import TransformerConfig
  ref = LTXVideoTransformer3DModel(**dict(diffusers_config(8, 64, layers=16), caption_channels=64))
  ref.save_pretrained(tmp_path / 'transformer')
  size = sum(p.numel() * 4 for p in ref.parameters())
  del ref
  config = TransformerConfig.from_diffusers(json.loads(
      (tmp_path / 'transformer' / 'config.json').read_text()))
  lora = random_lora(tmp_path / 'big.safetensors', config, rank=16, targets=TARGETS + [
      'proj_in', 'proj_out', 'linear_1', 'linear_2', 'linear'])
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  peaks = {}
  for name, arg in (('plain', '-'), ('lora', str(lora))):
    proc = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, str(tmp_path), arg], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peaks[name] = int(proc.stdout.split()[-1])
  extra = peaks['lora'] - peaks['plain']
  print(f"model {size / 2**20:.0f} MiB: peak RSS plain {peaks['plain'] / 2**20:.0f} MiB, "
        f"with LoRA {peaks['lora'] / 2**20:.0f} MiB (+{extra / 2**20:.0f} MiB)")
  assert size > 250 * 2**20
  assert extra < 0.15 * size, peaks  # a second copy of the model would add 100%


def test_diffusers_save_folder(model_dir, two_peft, tmp_path, highest_precision):
  """A folder as diffusers' save_lora_weights writes it (pytorch_lora_weights.safetensors)."""
  import shutil
  a, _ = two_peft
  (tmp_path / 'saved').mkdir()
  shutil.copy(a, tmp_path / 'saved' / 'pytorch_lora_weights.safetensors')
  (tmp_path / 'saved' / 'other.safetensors').write_bytes(b'')
  got = load_transformer(model_dir, loras=[(tmp_path / 'saved', 0.8)])
  want = load_transformer(model_dir, loras=[(a, 0.8)])
  np.testing.assert_array_equal(np.asarray(got.blocks.attn1.to_q.kernel[...]),
                                np.asarray(want.blocks.attn1.to_q.kernel[...]))
  with pytest.raises(FileNotFoundError, match='holds 0 .safetensors files'):
    load_transformer(model_dir, loras=tmp_path)


def test_full_differences_and_adapter_named_keys(model_dir, two_peft, tmp_path,
                                                 highest_precision):
  """ComfyUI's `.diff` / `.diff_b` (a norm weight, a bias, the bare scale_shift_table) with
  official names, and a PEFT model's raw keys (`lora_A.<adapter>.weight`)."""
  rng = np.random.default_rng(3)
  ref = fresh_reference(model_dir)
  params = dict(ref.named_parameters())
  diffs = {'transformer_blocks.1.attn1.norm_q.weight': 'transformer_blocks.1.attn1.q_norm.diff',
           'transformer_blocks.0.ff.net.2.bias': 'transformer_blocks.0.ff.net.2.diff_b',
           'scale_shift_table': 'scale_shift_table.diff',
           'transformer_blocks.2.scale_shift_table': 'transformer_blocks.2.scale_shift_table.diff',
           'time_embed.linear.weight': 'adaln_single.linear.diff'}
  tensors = {}
  with torch.no_grad():
    for param, key in diffs.items():
      d = rng.normal(0, 0.2, params[param].shape).astype(np.float32)
      tensors['diffusion_model.' + key] = d
      params[param] += torch.from_numpy(0.5 * d)
  path = tmp_path / 'diff.safetensors'
  write_safetensors(path, tensors)
  err, _ = compare(load_transformer(model_dir, loras=[(path, 0.5)]), ref)
  print(f"full differences: rel L2 {err:.2e}")
  assert err < 1e-5, err

  a, _ = two_peft
  raw = {k.replace('.lora_A.weight', '.lora_A.default.weight').replace(
      '.lora_B.weight', '.lora_B.default.weight').replace('transformer.', 'base_model.model.', 1): v
         for k, v in peft_tensors(a).items()}
  path = tmp_path / 'raw.safetensors'
  meta = __import__('safetensors').safe_open(str(a), 'np').metadata()
  write_safetensors(path, raw, meta)
  got = load_transformer(model_dir, loras=[(path, 0.8)])
  want = load_transformer(model_dir, loras=[(a, 0.8)])
  for leaf in ('to_q', 'to_k'):
    np.testing.assert_array_equal(np.asarray(getattr(got.blocks.attn2, leaf).kernel[...]),
                                  np.asarray(getattr(want.blocks.attn2, leaf).kernel[...]))


@pytest.mark.parametrize('metadata, match', [
    ({'lora_adapter_metadata': '{"lora_alpha": "much"}'}, "alpha of transformer_blocks.0.attn1"
                                                          ".to_q is nan"),
    ({'lora_adapter_metadata': '{not json'}, 'unreadable lora_adapter_metadata'),
    ({'lora_adapter_metadata': '[1, 2]'}, 'is a list, not a JSON object'),
    ({'lora_adapter_metadata': '{"use_dora": true}'}, 'DoRA'),
])
def test_damaged_lora_metadata(model_dir, tmp_path, metadata, match):
  tensors = {'transformer.transformer_blocks.0.attn1.to_q.lora_A.weight':
             np.ones((2, 16), np.float32),
             'transformer.transformer_blocks.0.attn1.to_q.lora_B.weight':
             np.ones((16, 2), np.float32)}
  path = tmp_path / 'meta.safetensors'
  write_safetensors(path, tensors, metadata)
  with pytest.raises(CheckpointFormatError, match=match) as e:
    load_transformer(model_dir, loras=path)
  assert str(path) in str(e.value)


def test_convert_bakes_adapters_in(repo, tmp_path, highest_precision):
  """tools/convert.py --lora: the converted transformer equals loading with the adapters; the
  manifest records them; a bad adapter leaves no output."""
  import subprocess
  import sys
  from pathlib import Path
  from ltx_jax.weights import orbax_io
  root, a, b = repo
  out = tmp_path / 'baked'
  tool = Path(__file__).resolve().parents[1] / 'tools' / 'convert.py'
  proc = subprocess.run([sys.executable, str(tool), '--source', str(root), '--out', str(out),
                         '--dtype', 'f32', '--components', 'transformer', '--allow-custom',
                         '--no-progress', '--lora', f'{a}:0.7', '--lora', f'{b}:-0.4'],
                        capture_output=True, text=True, timeout=300,
                        env=dict(__import__('os').environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr
  manifest = json.loads((out / orbax_io.MANIFEST).read_text())
  assert [(x['name'], x['scale']) for x in manifest['components']['transformer']['loras']] == [
      ('la', 0.7), ('lb', -0.4)]
  got = load_transformer(out)
  want = load_transformer(root, loras=[(a, 0.7), (b, -0.4)])
  for (p, x), (_, y) in zip(nnx.state(got).flat_state(), nnx.state(want).flat_state()):
    np.testing.assert_array_equal(np.asarray(x.get_value()), np.asarray(y.get_value()), str(p))
  bad = tmp_path / 'bad.safetensors'
  write_safetensors(bad, {'transformer.nowhere.lora_A.weight': np.zeros((1, 2), np.float32),
                          'transformer.nowhere.lora_B.weight': np.zeros((2, 1), np.float32)})
  proc = subprocess.run([sys.executable, str(tool), '--source', str(root), '--out',
                         str(tmp_path / 'refused'), '--allow-custom', '--no-progress',
                         '--lora', str(bad)], capture_output=True, text=True, timeout=300,
                        env=dict(__import__('os').environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1 and 'nowhere' in proc.stderr, proc.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.safetensors', 'baked']  # no output


def test_cli_lora_values(tmp_path):
  """config.loras accepts one path, quoted literals and unquoted (path, scale) pairs."""
  from ltx_jax.cli import config as config_lib
  a, b = tmp_path / 'a.safetensors', tmp_path / 'b c.safetensors'
  for f in (a, b):
    f.write_bytes(b'')
  c = config_lib.base_config()
  want = ((str(a), 0.8), (str(b), -0.3))
  for text in (f'(("{a}", 0.8), ("{b}", -0.3))', f'(({a}, 0.8), ({b}, -3e-1))',
               f'[[{a}, 0.8], [{b}, -0.3]]'):
    c.loras = text
    assert config_lib.loras(c) == want, text
  c.loras = str(a)
  assert config_lib.loras(c) == ((str(a), 1.0),)
  c.loras = f'({a}, 2)'
  assert config_lib.loras(c) == ((str(a), 2.0),)
  c.loras = f'(({a}, inf),)'
  with pytest.raises(UsageError, match='is not a literal'):
    config_lib.loras(c)


def test_runtime_adapters_on_fp8_weights(model_dir, two_peft):
  """Runtime adapters beside fp8 block kernels: factors in bf16, the product added to the fp8
  matmul's (both matmul modes); close to the f32 model at fp8's precision."""
  from ltx_jax.nn import set_matmul
  a, _ = two_peft
  d = inputs(5)
  args = [jnp.asarray(d[k]) for k in ('x', 'ctx', 't', 'mask')]
  kw = dict(num_frames=GRID[0], height=GRID[1], width=GRID[2],
            rope_interpolation_scale=jnp.array(SCALE))
  want = load_transformer(model_dir, loras=[(a, 0.8)])(*args, **kw)
  model = load_transformer(model_dir, dtype='bf16', param_dtype='fp8', loras=[(a, 0.8)],
                           lora_mode='runtime')
  assert model.blocks.attn1.to_q.lora.a[...].dtype == jnp.bfloat16
  for matmul in ('default', 'fp8'):
    set_matmul(model, matmul)
    err = rel_l2(np.asarray(model(*args, **kw), np.float32), want)
    print(f"runtime adapters on fp8 weights, matmul={matmul}: rel L2 {err:.2e} vs f32")
    assert err < 0.1, (matmul, err)


def test_metadata_without_alpha_uses_peft_default(model_dir, two_peft, tmp_path,
                                                  highest_precision):
  """Metadata that names no lora_alpha: PEFT's LoraConfig default (8), as diffusers applies."""
  a, _ = two_peft
  path = tmp_path / 'noalpha.safetensors'
  write_safetensors(path, peft_tensors(a), {'lora_adapter_metadata': json.dumps(
      {'transformer.r': 4, 'transformer.rank_pattern': {'ff.net.0.proj': 2},
       'transformer.target_modules': TARGETS})})
  ref = diffusers_with_loras(model_dir, [path], [0.5])
  err, _ = compare(load_transformer(model_dir, loras=[(path, 0.5)]), ref)
  assert err < 1e-5, err


def test_kohya_without_alpha_tensors_is_alpha_rank(model_dir, tmp_path, highest_precision):
  """kohya files without `.alpha` tensors load at alpha = rank whatever `ss_network_alpha`
  says: the `lora.down` / `lora.up` form against diffusers' loader (which reads no metadata
  alpha), the `lora_down` / `lora_up` form against an explicit merge at factor 1 (ComfyUI's)."""
  mods = random_modules(model_dir, 9, ['attn1.to_k', 'attn2.to_v', 'ff.net.2'], rank=4)
  meta = {'ss_network_alpha': '1.0', 'ss_network_dim': '4', 'ss_network_module': 'networks.lora'}
  want = explicit_merge(model_dir, [({m: (d, u, 1.0) for m, (d, u) in mods.items()}, 0.7)])
  for down, up in (('lora.down', 'lora.up'), ('lora_down', 'lora_up')):
    tensors = {}
    for m, (d, u) in mods.items():
      tensors[f'diffusion_model.{m}.{down}.weight'] = d
      tensors[f'diffusion_model.{m}.{up}.weight'] = u
    path = tmp_path / f'kohya_{down}.safetensors'
    write_safetensors(path, tensors, meta)
    ours = load_transformer(model_dir, loras=[(path, 0.7)])
    refs = [want] + ([diffusers_with_loras(model_dir, [path], [0.7])] if down == 'lora.down'
                     else [])
    for ref in refs:
      err, _ = compare(ours, ref)
      print(f"kohya {down} without alpha tensors: rel L2 {err:.2e}")
      assert err < 1e-5, (down, err)
