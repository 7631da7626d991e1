"""Every release's recorded metadata, from file to video: a tiny official single file whose
`config` metadata is the release's (tests/release_metadata.py, shrunk in its sizes only), loaded
by `LTXPipeline.from_pretrained`, `LTXMultiScalePipeline.from_pretrained` (with a spatial
upscaler file carrying the released flat config) and the command line, generating with the
release's preset; and the same file read by the official `ltx_video` loaders, as
`ltx_video/inference.py` reads it, runs to the same latents and frames (f32, 'highest')."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import randomize_torch_module, rel_l2
from release_metadata import (DIFFUSERS_RELEASES, LATENT, RELEASES, SPATIAL_UPSCALER,
                              TEMPORAL_UPSCALER, diffusers_scheduler_095, official_metadata,
                              shrink)
from source_layouts import layouts
from ltx_jax import LTXMultiScalePipeline, load_latent_upsampler, presets, video_io
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.weights import write_safetensors

ROOT = Path(__file__).resolve().parents[1]
H, W, FRAMES = 64, 96, 9  # latents (2, 2, 3) of every released VAE (32x space, 8x time)
SMALL = dict(height=H, width=W, num_frames=FRAMES, max_sequence_length=16)
UPSCALER = 'ltxv-spatial-upscaler-0.9.8.safetensors'
_BUILT: dict = {}


def write_release(folder: Path, name: str, text_files, seed: int = 0) -> Path:
  """`folder` with release `name`'s single file (tiny random official modules built from its
  shrunk metadata), the T5 files and the spatial upscaler beside it. Returns the file."""
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  meta = official_metadata(name)
  torch.manual_seed(seed)
  transformer = Transformer3DModel.from_config(json.loads(json.dumps(meta['transformer'])))
  randomize_torch_module(transformer, seed=seed, std=0.1)
  vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(meta['vae'])))
  randomize_torch_module(vae, seed=seed + 1)
  with torch.no_grad():
    for key, p in vae.named_parameters():
      if 'per_channel_scale' in key:
        p.zero_()  # the decoder's noise injection is random: parity runs without it
      if key.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  tensors = {f'model.diffusion_model.{k}': v.numpy() for k, v in transformer.state_dict().items()}
  tensors.update({f'vae.{k}': v.numpy() for k, v in vae.state_dict().items()})
  rng = np.random.default_rng(seed)
  for key, v in {'mean-of-means': rng.normal(size=LATENT) * 0.3,
                 'std-of-means': rng.uniform(0.5, 2, LATENT),
                 'mean-of-stds': rng.uniform(size=LATENT), 'channel': np.arange(LATENT)}.items():
    tensors[f'vae.per_channel_statistics.{key}'] = np.asarray(v, np.float32)
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / RELEASES[name][0]
  write_safetensors(path, tensors, {'config': json.dumps(meta)})
  for f in text_files:
    (folder / f.name).symlink_to(f)
  up_config = shrink(SPATIAL_UPSCALER, 'upsampler')
  upsampler = LatentUpsampler.from_config(up_config).eval()
  randomize_torch_module(upsampler, seed=seed + 2)
  write_safetensors(folder / UPSCALER, {k: v.numpy() for k, v in upsampler.state_dict().items()},
                    {'config': json.dumps(up_config)})
  return path


@pytest.fixture(scope='module')
def text_files(tmp_path_factory):
  single = layouts(tmp_path_factory.getbasetemp() / 'layouts')['single']
  return single / 't5-encoder-f32.gguf', single / 'spiece.model'


@pytest.fixture(scope='module')
def release(text_files, tmp_path_factory):
  """name -> the folder of release `name` (built once per module)."""
  def get(name):
    if name not in _BUILT:
      folder = tmp_path_factory.mktemp(name)
      write_release(folder, name, text_files)
      _BUILT[name] = folder
    return _BUILT[name]
  return get


def test_metadata_as_recorded():
  """The fixtures' values forms are the releases' (nulls, absent keys, PixArt leftovers)."""
  m = official_metadata('ltxv-2b-0.9.0-dev')
  assert m['scheduler'] == {'_class_name': 'RectifiedFlowScheduler',
                            '_diffusers_version': '0.25.1', 'num_train_timesteps': 1000,
                            'shifting': 'SD3', 'base_resolution': None,
                            'target_shift_terminal': 0.1}
  assert 'causal_temporal_positioning' not in m['transformer']
  assert m['transformer']['project_to_2d_pos'] is True
  assert m['transformer']['num_vector_embeds'] is None and 'blocks' in m['vae']
  m = official_metadata('ltxv-13b-0.9.8-distilled')
  assert m['scheduler']['shifting'] is None and m['scheduler']['sampler'] == 'LinearQuadratic'
  assert m['allowed_inference_steps'] == [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725,
                                          0.4219]
  full = official_metadata('ltxv-13b-0.9.8-distilled', tiny=False)
  assert (full['transformer']['num_layers'], full['transformer']['attention_head_dim']) == (48,
                                                                                            128)
  assert official_metadata('ltxv-2b-0.9.1-dev')['vae']['encoder_blocks'][1:3] == [
      ['compress_all', {}], ['res_x_y', 1]]


@pytest.mark.parametrize('entry,key,value,match', [
    ('scheduler', 'base_resolution', 'abc', r"scheduler config base_resolution='abc': expected "
     r"an integer in \[1, 1073741824\]"),
    ('scheduler', 'shifting', 'Foo', r"scheduler config shifting='Foo': expected one of"),
    ('scheduler', 'sampler', None, r"scheduler config sampler=None: expected one of"),
    ('scheduler', 'num_train_timesteps', 500, r"num_train_timesteps=500: expected one of \[1000\]"),
    ('scheduler', '_class_name', 'DDIMScheduler', "expected 'RectifiedFlowScheduler'"),
    ('transformer', 'qk_norm', 'layer_norm', r"qk_norm='layer_norm' \(ltx_jax supports 'rms_norm'"),
    ('transformer', 'timestep_scale_multiplier', 500, 'timestep_scale_multiplier=500'),
    ('transformer', 'standardization_norm', '<absent>', "no 'standardization_norm', i.e. the "
     "official default 'layer_norm'"),
    ('transformer', 'upcast_attention', True, 'upcast_attention=True'),
    ('vae', 'normalize_latent_channels', True, 'normalize_latent_channels=True'),
    ('vae', '_class_name', 'AutoencoderKL', "expected 'CausalVideoAutoencoder'"),
    ('vae', 'use_quant_conv', '<absent>', 'use_quant_conv=True'),
])
def test_values_no_release_has_are_refused(entry, key, value, match):
  """Values and absences no release has: one-line errors naming the key (the parsers that
  `from_pretrained` runs on the metadata, before anything loads)."""
  from ltx_jax.errors import CheckpointFormatError
  from ltx_jax.models.transformer.config import TransformerConfig
  from ltx_jax.models.vae.config import VAEConfig
  from ltx_jax.sampling import SchedulerConfig
  parse = {'scheduler': SchedulerConfig.from_official, 'transformer': TransformerConfig
           .from_official, 'vae': VAEConfig.from_official}[entry]
  for name in ('ltxv-2b-0.9.0-dev', 'ltxv-2b-0.9.8-distilled'):
    cfg = official_metadata(name)[entry]
    parse(cfg)  # as released: accepted
    if value == '<absent>':
      cfg.pop(key)
    else:
      cfg[key] = value
    with pytest.raises(CheckpointFormatError, match=match):
      parse(cfg)
  # SimpleDiffusion shifting reads base_resolution: null is refused there only.
  cfg = dict(official_metadata('ltxv-2b-0.9.0-dev')['scheduler'], shifting='SimpleDiffusion')
  with pytest.raises(CheckpointFormatError, match=r"base_resolution=None: expected an integer"):
    SchedulerConfig.from_official(cfg)
  assert SchedulerConfig.from_official(dict(cfg, base_resolution=512)).base_resolution == 512


def _official_pipeline(path: Path, allowed):
  """The official LTXVideoPipeline on `path`, loaded as ltx_video/inference.py loads it."""
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  from ltx_video.schedulers.rf import RectifiedFlowScheduler
  return LTXVideoPipeline(
      tokenizer=None, text_encoder=None,
      vae=CausalVideoAutoencoder.from_pretrained(str(path)).float().eval(),
      transformer=Transformer3DModel.from_pretrained(str(path)).float().eval(),
      scheduler=RectifiedFlowScheduler.from_pretrained(str(path)),
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None, allowed_inference_steps=allowed)


def _count(tree) -> int:
  from flax import nnx
  return sum(int(np.prod(v.get_value().shape)) for _, v in nnx.iter_graph(tree)
             if isinstance(v, nnx.Param))


@pytest.mark.slow
@pytest.mark.parametrize('name', list(RELEASES))
def test_release_loads_and_generates(name, release):
  """LTXPipeline.from_pretrained reads the file (strictly: every tensor the official modules
  built from the metadata wrote, no more, no less) and generates with the release's preset; the
  official loaders build modules of as many parameters from the same file."""
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  folder = release(name)
  path = folder / RELEASES[name][0]
  allowed = official_metadata(name).get('allowed_inference_steps')
  pipe = LTXPipeline.from_pretrained(folder, allow_custom=True)
  assert pipe.release == ('custom-distilled' if allowed else 'custom-dev')
  assert pipe.allowed_inference_steps == (None if allowed is None else tuple(allowed))
  for ours, theirs in ((pipe.transformer, Transformer3DModel.from_pretrained(str(path))),
                       (pipe.vae, CausalVideoAutoencoder.from_pretrained(str(path)))):
    assert _count(ours) == sum(p.numel() for p in theirs.parameters())
  assert pipe.transformer.config.causal_temporal_positioning == bool(
      official_metadata(name)['transformer'].get('causal_temporal_positioning', False))
  out = pipe(**tiny_preset(_preset(name)), prompt='a cat', progress=False)
  assert out.frames.shape == (1, FRAMES, H, W, 3) and out.frames.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize('name', ['ltxv-2b-0.9.0-dev', 'ltxv-2b-0.9.1-dev',
                                  'ltxv-2b-0.9.5-dev', 'ltxv-13b-0.9.8-distilled'])
def test_release_official_parity(name, release, highest_precision):
  """The same file through the official loaders (as ltx_video/inference.py loads it) and
  LTXVideoPipeline: the same latents and frames for the file's own schedule."""
  folder = release(name)
  path = folder / RELEASES[name][0]
  allowed = official_metadata(name).get('allowed_inference_steps')
  pipe = LTXPipeline.from_pretrained(folder, allow_custom=True)
  ref = _official_pipeline(path, allowed)
  e = np.random.default_rng(1).standard_normal((1, 6, 32)).astype(np.float32)
  m = np.array([[1, 1, 1, 1, 0, 0]])
  grid = (2, H // 32, W // 32)
  # The official pipeline draws its noise [B, N, C] from the generator first.
  noise = torch.randn((1, int(np.prod(grid)), LATENT),
                      generator=torch.Generator().manual_seed(3)).numpy()
  schedule = (dict(timesteps=[1.0, 0.9094, 0.725, 0.4219]) if allowed else
              dict(num_inference_steps=3))
  t = torch.from_numpy
  with torch.no_grad():
    want = ref(prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(e),
               negative_prompt_attention_mask=t(m), negative_prompt=None, guidance_scale=1.0,
               height=H, width=W, num_frames=FRAMES, frame_rate=25, decode_timestep=0.05,
               decode_noise_scale=0.0, generator=torch.Generator().manual_seed(3),
               output_type='pt', is_video=True, vae_per_channel_normalize=True,
               **schedule).images  # [B, C, F, H, W] in [0, 1]
  ours_schedule = ({'timesteps': [1000 * v for v in schedule['timesteps']]} if allowed else
                   schedule)
  got = pipe(prompt_embeds=e, prompt_attention_mask=m, latents=noise.reshape(1, *grid, LATENT),
             guidance_scale=1.0, height=H, width=W, num_frames=FRAMES, frame_rate=25,
             output_type='latent', progress=False, **ours_schedule)
  frames = np.asarray(pipe.decode_video(got.latents, 0.05, 0.0))
  err = rel_l2(np.clip(frames / 2 + 0.5, 0, 1), want.permute(0, 2, 3, 4, 1).numpy())
  print(f"{name}: official frames rel L2 {err:.2e}")
  assert err < 1e-4


def _tiny_blocks(v):
  """A preset's skip_block_list (blocks of 28 / 48 layers) on the 2 layers of the tiny models."""
  return [_tiny_blocks(x) for x in v] if isinstance(v, (list, tuple)) else v % 2


def tiny_preset(name: str) -> dict:
  """`presets.sampling(name)` at the test size, its STG blocks on the tiny models' layers."""
  s = presets.sampling(name, **SMALL)
  return dict(s, skip_block_list=_tiny_blocks(s['skip_block_list']))


def _preset(name: str) -> str:
  return {'ltxv-2b-0.9.0-dev': 'ltxv-2b-0.9.0', 'ltxv-2b-0.9.1-dev': 'ltxv-2b-0.9.1',
          'ltxv-2b-0.9.5-dev': 'ltxv-2b-0.9.5'}.get(name, name)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['ltxv-2b-0.9.0-dev', 'ltxv-13b-0.9.8-dev',
                                  'ltxv-13b-0.9.8-distilled'])
def test_release_multi_scale(name, release):
  """LTXMultiScalePipeline.from_pretrained finds the upscaler beside the file and runs the
  release's recipe (the official multi-scale preset, or two short passes for releases whose
  official config is single-pass)."""
  multi = LTXMultiScalePipeline.from_pretrained(release(name), allow_custom=True)
  assert multi.upsampler.config.mid_channels == 32
  p = presets.get(_preset(name))
  if p.multi_scale is not None:
    kwargs = presets.multi_scale(p.name, **SMALL)
    for which in ('first_pass', 'second_pass'):
      if 'skip_block_list' in kwargs[which]:
        kwargs[which]['skip_block_list'] = _tiny_blocks(kwargs[which]['skip_block_list'])
  else:
    single = presets.sampling(p.name, **SMALL)
    kwargs = dict({k: v for k, v in single.items() if k not in presets.PASS_KEYS},
                  downscale_factor=0.6666666, first_pass=dict(num_inference_steps=3),
                  second_pass=dict(num_inference_steps=3, skip_initial_inference_steps=1))
  out = multi(**kwargs, prompt='a cat', progress=False)
  assert out.frames.shape == (1, FRAMES, H, W, 3)


def test_upscalers_as_released(tmp_path, highest_precision):
  """Both upscalers' flat configs (shrunk) load as the official LatentUpsampler loads them."""
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  for config, factors in ((SPATIAL_UPSCALER, (1, 2, 2)), (TEMPORAL_UPSCALER, (2, 1, 1))):
    cfg = shrink(config, 'upsampler')
    model = LatentUpsampler.from_config(cfg).eval()
    path = tmp_path / f"{'t' if factors[0] == 2 else 's'}.safetensors"
    write_safetensors(path, {k: v.numpy() for k, v in model.state_dict().items()},
                      {'config': json.dumps(cfg)})
    official = LatentUpsampler.from_pretrained(path)
    ours = load_latent_upsampler(path)
    assert ours.config.factors == factors
    fields = ('in_channels', 'mid_channels', 'num_blocks_per_stage', 'dims',
              'spatial_upsample', 'temporal_upsample')
    assert {k: getattr(ours.config, k) for k in fields} == {k: getattr(official, k)
                                                            for k in fields}
    x = torch.randn(1, LATENT, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
      want = official(x).numpy().transpose(0, 2, 3, 4, 1)
    got = np.asarray(ours(jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1))))
    assert got.shape == want.shape and rel_l2(got, want) < 1e-5


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'ltx_jax.generate', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize('name,extra', [
    ('ltxv-2b-0.9.0-dev', ['--config.model.release=custom', '--config.skip_block_list=(1,)',
                           '--config.num_inference_steps=4']),
    ('ltxv-2b-0.9.8-distilled', ['--config.model.release=custom',
                                 '--config.multi_scale=False']),
])
def test_release_command_line(name, extra, release, tmp_path):
  folder = release(name)
  proc = _cli('--config', f"{ROOT / 'configs' / 't2v.py'}:{_preset(name)}",
              f'--config.model.source={folder}', f'--config.model.file={RELEASES[name][0]}',
              f'--config.output_dir={tmp_path}', f'--config.height={H}', f'--config.width={W}',
              f'--config.num_frames={FRAMES}', '--config.max_sequence_length=16',
              '--config.prompt=a cat', *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (video,) = tmp_path.glob('*.mp4')
  info = video_io.read_mp4_info(video)
  assert (info['frames'], info['width'], info['height']) == (FRAMES, W, H)


@pytest.mark.slow
def test_readme_first_example(release, tmp_path):
  """The README's first Python example on the tiny 2B 0.9.8 distilled file (its released
  allowed_inference_steps): `presets.sampling` gives the single distilled pass, which ends at
  timestep 0.03 (not at 725, as the first pass of the multi-scale recipe does), the allowed-steps
  check accepts it, and the video decodes."""
  name = 'ltxv-2b-0.9.8-distilled'
  pipe = LTXPipeline.from_pretrained(release(name), dtype=jnp.float32,
                                     file=presets.get(name).file, allow_custom=True)
  kw = presets.sampling(name, **SMALL)
  assert kw['timesteps'][-1] <= 50 and kw['timesteps'][:7] == [1000, 993, 987, 981, 975, 909,
                                                                725]
  out = pipe(**kw, prompt='A red fox trots through fresh snow', seed=0, progress=False)
  assert out.frames.shape == (1, FRAMES, H, W, 3) and out.frames.dtype == np.uint8
  assert out.latents.shape == (1, 2, H // 32, W // 32, LATENT)
  video_io.write_mp4(tmp_path / 'fox.mp4', out.frames[0], fps=30)
  assert video_io.read_mp4_info(tmp_path / 'fox.mp4')['frames'] == FRAMES
  # Other timesteps are still refused for this file, and a finishing step only as the last one.
  from ltx_jax.errors import UsageError
  for bad in ([1000.0, 950.0, 725.0], [1000.0, 725.0, 0.03, 0.02]):
    with pytest.raises(UsageError, match='not among this distilled checkpoint'):
      pipe.prepare(prompt='a cat', timesteps=bad, **SMALL)


def write_diffusers_release(root: Path, version: str, text_repo: Path, seed: int = 0) -> tuple:
  """A diffusers-layout repo of `version` (a key of DIFFUSERS_RELEASES): its recorded
  transformer / VAE / scheduler config.json (shrunk), tiny random weights, the tiny T5 and
  tokenizer, and a latent_upsampler/ folder with the spatial upscaler's values (shrunk).
  Returns the torch (transformer, vae)."""
  import shutil
  from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler,
                         LTXVideoTransformer3DModel)
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  tcfg, vcfg, scfg = DIFFUSERS_RELEASES[version]
  torch.manual_seed(seed)
  transformer = LTXVideoTransformer3DModel.from_config(shrink(tcfg, 'diffusers_transformer'))
  randomize_torch_module(transformer.eval(), seed=seed, std=0.1)
  vae = AutoencoderKLLTXVideo.from_config(shrink(vcfg, 'diffusers_vae')).eval()
  randomize_torch_module(vae, seed=seed + 1)
  with torch.no_grad():
    for key, p in vae.named_parameters():
      if 'per_channel_scale' in key:
        p.zero_()
      if key.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  scheduler = FlowMatchEulerDiscreteScheduler.from_config(scfg or diffusers_scheduler_095())
  upsampler = LTXLatentUpsamplerModel(**{k: v for k, v in shrink(
      SPATIAL_UPSCALER, 'upsampler').items() if k != '_class_name'}).eval()
  randomize_torch_module(upsampler, seed=seed + 2)
  transformer.save_pretrained(root / 'transformer')
  vae.save_pretrained(root / 'vae')
  scheduler.save_pretrained(root / 'scheduler')
  upsampler.save_pretrained(root / 'latent_upsampler')
  for c in ('text_encoder', 'tokenizer'):
    shutil.copytree(text_repo / c, root / c)
  shutil.copyfile(text_repo / 'model_index.json', root / 'model_index.json')
  return transformer, vae


@pytest.mark.slow
@pytest.mark.parametrize('version', sorted(DIFFUSERS_RELEASES))
def test_diffusers_release(version, tmp_path_factory):
  """A diffusers folder of each release's recorded configs loads (strictly; as many parameters
  as diffusers' modules) through LTXMultiScalePipeline.from_pretrained (its latent_upsampler/
  folder) and generates; 0.9.7 also runs multi-scale."""
  text_repo = layouts(tmp_path_factory.getbasetemp() / 'layouts')['diffusers']
  root = tmp_path_factory.mktemp(f'diffusers-{version}')
  transformer, vae = write_diffusers_release(root, version, text_repo)
  multi = LTXMultiScalePipeline.from_pretrained(root, allow_custom=True)
  pipe = multi.pipe
  assert _count(pipe.transformer) == sum(p.numel() for p in transformer.parameters())
  assert _count(pipe.vae) == sum(p.numel() for p in vae.parameters())
  assert pipe.vae.config.timestep_conditioning == (version != '0.9.0')
  assert pipe.vae.config.spatial_compression == 32
  out = pipe(prompt='a cat', num_inference_steps=2, guidance_scale=1.0, progress=False, **SMALL)
  assert out.frames.shape == (1, FRAMES, H, W, 3)
  if version == '0.9.7':  # the release with an upscaler (the others' compile is the same)
    out = multi(downscale_factor=0.6666666, first_pass=dict(num_inference_steps=2),
                second_pass=dict(num_inference_steps=2, skip_initial_inference_steps=1),
                prompt='a cat', guidance_scale=1.0, progress=False, **SMALL)
    assert out.frames.shape == (1, FRAMES, H, W, 3)
