"""Long videos in sliding windows against diffusers' LTXI2VLongMultiPromptPipeline.

Both sides see the same tiny random components, the same per-window starting noise (torch's,
seeded seed + window start as diffusers draws it) and the same text embeddings: the text
encoder is replaced on both sides by a table of random embeddings per prompt (T5 itself is
compared in test_pipeline.py; diffusers runs it unmasked, the official pipeline and ours
masked). diffusers runs its recommended LTXEulerAncestralRFScheduler at eta=0 (no step noise).
"""

import numpy as np
import pytest
import torch

from builders import LATENT, TEXT_DIM, tiny_repo
from conftest import rel_l2
from ltx_jax import LTXLongVideoPipeline, LTXPipeline, UsageError
from ltx_jax.pipeline.long_video import split_windows
from ltx_jax.sampling import blend_loop

H, W = 32, 64  # latent 4 x 8 (VAE compression 4 x 8 x 8)
HL, WL = 4, 8
SIGMAS = [1.0, 0.95, 0.7, 0.35, 0.0]
SEED = 3


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
  root = tmp_path_factory.mktemp('ltx-tiny-long')
  return root, tiny_repo(root)


@pytest.fixture(scope='module')
def pipe(repo):
  return LTXPipeline.from_pretrained(repo[0], allow_custom=True)


@pytest.fixture(scope='module')
def reference(repo):
  from diffusers import LTXEulerAncestralRFScheduler, LTXI2VLongMultiPromptPipeline
  transformer, vae, _, _ = repo[1]
  return LTXI2VLongMultiPromptPipeline(
      scheduler=LTXEulerAncestralRFScheduler(eta=0.0), vae=vae, text_encoder=None,
      tokenizer=None, transformer=transformer)


class Texts:
  """Random embeddings [1, 6, D] and masks per prompt, the same on both sides."""

  def __init__(self):
    self.table = {}

  def get(self, text):
    if text not in self.table:
      rng = np.random.default_rng(len(self.table) + 11)
      mask = np.ones((1, 6), np.int64)
      mask[0, 2 + len(self.table) % 3:] = 0
      self.table[text] = (rng.standard_normal((1, 6, TEXT_DIM)).astype(np.float32), mask)
    return self.table[text]

  def ours(self, prompts, max_sequence_length=128):
    e, m = self.get(prompts[0])
    return e, m

  def theirs(self, prompt, negative_prompt=None, do_classifier_free_guidance=True, **_):
    e, m = self.get(prompt[0])
    ne, nm = self.get(negative_prompt or '')
    t = torch.from_numpy
    return t(e), t(m).bool(), t(ne), t(nm).bool()


def torch_noise(start, shape):
  """diffusers' window noise: N(0, 1) from torch.Generator(seed + start), [B, C, F, H, W]."""
  b, f, h, w, c = shape
  z = torch.randn((b, c, f, h, w), generator=torch.Generator().manual_seed(SEED + start))
  return z.permute(0, 2, 3, 4, 1).numpy()


def to_torch(latents):
  """ours [B, F, H, W, C] -> diffusers [B, C, F, H, W]."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(latents, -1, 1)))


def image():
  rng = np.random.default_rng(5)
  yy, xx = np.mgrid[0:H, 0:W]
  return np.stack([128 + 100 * np.sin(xx / 3), 128 + 90 * np.cos(yy / 4),
                   rng.integers(0, 255, (H, W))], -1).astype(np.uint8)


def run_both(pipe, reference, monkeypatch, frames=False, ours_only=None, **kw):
  """-> (ours, diffusers latents [1, F', H', W', C], diffusers frames in [0, 1] or None)."""
  texts = Texts()
  monkeypatch.setattr(pipe, 'encode_prompt', texts.ours)
  monkeypatch.setattr(reference, 'encode_prompt', texts.theirs)
  common = dict(height=H, width=W, frame_rate=25, sigmas=SIGMAS, seed=SEED,
                decode_timestep=0.05, decode_noise_scale=0.0, decode_horizontal_tiles=1,
                decode_vertical_tiles=1, decode_overlap=0)
  common.update(kw)
  theirs_kw = dict(common)
  for name in ('guidance_latents', 'negative_index_latents'):
    if theirs_kw.get(name) is not None:
      theirs_kw[name] = to_torch(theirs_kw[name])
  if theirs_kw.get('cond_image') is not None:
    from PIL import Image
    theirs_kw['cond_image'] = Image.fromarray(theirs_kw['cond_image'])
  with torch.no_grad():
    want = reference(output_type='latent', **theirs_kw).frames
    want_frames = reference(output_type='np', **theirs_kw).frames if frames else None
  ours = LTXLongVideoPipeline(pipe)(output_type='np' if frames else 'latent',
                                    noise=torch_noise, decode_temporal_tile=64, progress=False,
                                    **common, **(ours_only or {}))
  return ours, want.permute(0, 2, 3, 4, 1).numpy(), want_frames


def check_latents(ours, want, what):
  assert ours.latents.shape == want.shape, (ours.latents.shape, want.shape)
  err = rel_l2(ours.latents, want)
  print(f"{what}: {len(ours.windows)} windows {ours.windows}, latents rel L2 {err:.2e}")
  assert err < 1e-4


def check_frames(ours_u8, theirs_float):
  theirs = np.asarray(theirs_float, np.float64) * 255.0
  assert ours_u8.shape == theirs.shape, (ours_u8.shape, theirs.shape)
  off = np.abs(ours_u8.astype(np.float64) - theirs) > 1.0 + 1e-6
  print(f"frames off by more than 1/255: {off.mean():.2%}")
  assert off.mean() <= 0.01, off.mean()


def test_windows_layout():
  assert split_windows(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]
  assert split_windows(9, 3, 1) == [(0, 3), (2, 5), (4, 7), (6, 9)]
  assert split_windows(3, 5, 2) == [(0, 3)]
  assert split_windows(10, 5, 3) == [(0, 5), (2, 7), (4, 9), (6, 10)]


def blend_one_shared_frame(monkeypatch):
  """diffusers with its one-frame seam blended: at an overlap of 2 latent frames one frame is
  shared once a window's first is dropped, and diffusers concatenates it (`linear_overlap_fuse`
  with overlap 1), a latent frame too many per window; ours cross-fades it (50/50), so the
  video has the frames asked for. Only for calls whose overlap is 2 latent frames."""
  from diffusers.pipelines.ltx import pipeline_ltx_i2v_long_multi_prompt as module
  fuse = module.linear_overlap_fuse

  def blended(prev, new, overlap):
    if overlap != 1:
      return fuse(prev, new, overlap)
    mixed = 0.5 * prev[:, :, -1:] + 0.5 * new[:, :, :1]
    return torch.cat([prev[:, :, :-1], mixed, new[:, :, 1:]], dim=2)

  monkeypatch.setattr(module, 'linear_overlap_fuse', blended)


def test_three_windows_one_prompt(pipe, reference, monkeypatch, highest_precision):
  # 29 frames -> 8 latent frames; windows of 4 overlapping by 2; CFG with rescale.
  blend_one_shared_frame(monkeypatch)
  ours, want, want_frames = run_both(
      pipe, reference, monkeypatch, frames=True, prompt='a fox in the snow',
      negative_prompt='blurry', num_frames=29, temporal_tile_size=16, temporal_overlap=8,
      guidance_scale=3.0, guidance_rescale=0.5)
  assert len(ours.windows) == 3 and ours.latents.shape[1] == 8 and ours.frames.shape[1] == 29
  check_latents(ours, want, 'one prompt')
  check_frames(ours.frames, want_frames)


def test_four_windows_prompt_per_window(pipe, reference, monkeypatch, highest_precision):
  # 33 frames -> 9 latent frames; windows of 3 overlapping by 1; one prompt per window.
  ours, want, _ = run_both(
      pipe, reference, monkeypatch, prompt='a fox | a cat | waves | the sky',
      num_frames=33, temporal_tile_size=12, temporal_overlap=4,
      temporal_overlap_cond_strength=0.7, adain_factor=0.0)
  assert len(ours.windows) == 4
  check_latents(ours, want, 'prompt per window')


def test_prompt_segments(pipe, reference, monkeypatch, highest_precision):
  segments = [dict(start_window=0, end_window=0, text='a fox'),
              dict(start_window=2, end_window=3, text='waves')]
  ours, want, _ = run_both(
      pipe, reference, monkeypatch, prompt='unused', prompt_segments=segments, num_frames=33,
      temporal_tile_size=12, temporal_overlap=4)
  check_latents(ours, want, 'prompt segments')


def test_conditioning_image(pipe, reference, monkeypatch, highest_precision):
  # Windows of 5 overlapping by 3 (a cross-fade over 2 frames); the image's latents are also
  # the negative-index frame.
  ours, want, want_frames = run_both(
      pipe, reference, monkeypatch, frames=True, prompt='a fox', cond_image=image(),
      cond_strength=0.8, num_frames=33, temporal_tile_size=20, temporal_overlap=12,
      negative_index_strength=0.6, adain_factor=0.0)
  assert len(ours.windows) == 3
  check_latents(ours, want, 'image')
  check_frames(ours.frames, want_frames)


def test_adain(pipe, reference, monkeypatch, highest_precision):
  ours, want, _ = run_both(
      pipe, reference, monkeypatch, prompt='a fox | a cat', num_frames=37,
      temporal_tile_size=20, temporal_overlap=12, adain_factor=0.6,
      skip_steps_sigma_threshold=0.97)
  check_latents(ours, want, 'adain')


def test_guidance_latents(pipe, reference, monkeypatch, highest_precision):
  rng = np.random.default_rng(7)
  guide = rng.standard_normal((1, 9, HL, WL, LATENT)).astype(np.float32)
  negative = rng.standard_normal((1, 2, HL, WL, LATENT)).astype(np.float32)
  blend_one_shared_frame(monkeypatch)
  ours, want, _ = run_both(
      pipe, reference, monkeypatch, prompt='a fox', num_frames=33, temporal_tile_size=16,
      temporal_overlap=8, guidance_latents=guide, guiding_strength=0.7,
      negative_index_latents=negative, negative_index_strength=0.9, guidance_scale=2.0)
  assert ours.latents.shape[1] == 9
  check_latents(ours, want, 'guidance latents')


def test_ancestral_steps(pipe, reference, monkeypatch, highest_precision):
  """eta = 1 (ComfyUI's euler_ancestral_RF): diffusers' scheduler draws our step noise."""
  import jax
  import diffusers.schedulers.scheduling_ltx_euler_ancestral_rf as rf
  from diffusers import LTXEulerAncestralRFScheduler
  from ltx_jax.pipeline.long_video import step_keys
  windows = split_windows(9, 5, 3)
  steps = len(SIGMAS) - 1
  calls = []

  def randn(shape, generator=None, device=None, dtype=None):
    w, j = divmod(len(calls), steps - 1)  # no noise on the step to sigma 0
    calls.append(shape)
    key = step_keys(SEED, windows[w][0], steps)[j]
    return torch.from_numpy(np.array(jax.random.normal(key, tuple(shape))))

  monkeypatch.setattr(rf, 'randn_tensor', randn)
  monkeypatch.setattr(reference, 'scheduler', LTXEulerAncestralRFScheduler(eta=1.0))
  ours, want, _ = run_both(
      pipe, reference, monkeypatch, ours_only=dict(eta=1.0), prompt='a fox',
      cond_image=image(), cond_strength=0.9, num_frames=33, temporal_tile_size=20,
      temporal_overlap=12)
  assert len(calls) == len(windows) * (steps - 1)
  check_latents(ours, want, 'eta 1')


def test_memory_flat_and_one_compile_per_shape(pipe):
  """2 and 6 windows of one shape: the same programs, so the same peak device memory; the
  loop compiles once per window shape (the first window, then the rest)."""
  long_pipe = LTXLongVideoPipeline(pipe)
  kw = dict(prompt='a fox | a cat', height=H, width=W, temporal_tile_size=12,
            temporal_overlap=4, sigmas=[1.0, 0.5, 0.0], decode_temporal_tile=4,
            decode_temporal_overlap=1, decode_horizontal_tiles=1, decode_vertical_tiles=1,
            max_sequence_length=16, progress=False)
  before = blend_loop.denoise_blended_jit._cache_size()
  six = long_pipe(num_frames=49, **kw)  # 13 latent frames
  assert len(six.windows) == 6
  assert blend_loop.denoise_blended_jit._cache_size() == before + 2
  two = long_pipe(num_frames=17, **kw)  # 5 latent frames
  assert len(two.windows) == 2
  assert blend_loop.denoise_blended_jit._cache_size() == before + 2
  assert six.frames.shape == (1, 49, H, W, 3) and two.frames.shape == (1, 17, H, W, 3)
  assert len(six.programs) == len(two.programs) == 3  # first window, other windows, decode
  peak6, peak2 = six.peak_device_bytes(), two.peak_device_bytes()
  print(f"peak device bytes: 6 windows {peak6}, 2 windows {peak2}")
  assert peak6 == peak2 > 0


@pytest.mark.parametrize('kwargs, message', [
    (dict(temporal_tile_size=12, temporal_overlap=12), r'temporal_overlap=12 must be below'),
    (dict(temporal_tile_size=4), r'temporal_tile_size=4 must be an integer >= 8'),
    (dict(temporal_overlap=-4), r'temporal_overlap=-4'),
    (dict(temporal_overlap=0), r'temporal_overlap=0 must be >= 4'),
    (dict(cond_strength=1.5), r'cond_strength=1.5 must be a finite number in \[0.0, 1.0\]'),
    (dict(temporal_overlap_cond_strength=-0.1), r'temporal_overlap_cond_strength=-0.1'),
    (dict(adain_factor=2), r'adain_factor=2'),
    (dict(guiding_strength=float('nan')), r'guiding_strength=nan'),
    (dict(negative_index_strength=3), r'negative_index_strength=3'),
    (dict(prompt='a | b | c | d | e'), r'prompt has 5 parts for 4 windows'),
    (dict(prompt_segments=[dict(start_window=1, end_window=4, text='x')]),
     r'end_window < 4'),
    (dict(prompt=None), r'pass prompt'),
    (dict(sigmas=[1.0, 1.0, 0.0]), r'sigmas=.*strictly decreasing'),
    (dict(sigmas=None, num_inference_steps=0), r'num_inference_steps=0'),
    (dict(skip_steps_sigma_threshold=0.1), r'skips every step'),
    (dict(num_frames=34), r'num_frames=34'),
    (dict(guidance_latents=np.zeros((1, 5, HL, WL, LATENT))), r'guidance_latents have shape'),
    (dict(negative_index_latents=np.zeros((1, 1, HL, WL + 1, LATENT))),
     r'negative_index_latents have shape'),
    (dict(cond_image='/nonexistent/cat.png'), r"cannot read image '/nonexistent/cat.png'"),
    (dict(decode_temporal_tile=4, decode_temporal_overlap=4), r'decode_temporal_overlap=4'),
    (dict(decode_horizontal_tiles=0), r'decode_horizontal_tiles=0'),
    (dict(output_type='pil'), r"output_type='pil'"),
    (dict(guidance_scale=-1.0), r'guidance_scale=-1.0'),
    (dict(eta=-0.5), r'eta=-0.5'),
])
def test_bad_arguments(pipe, kwargs, message):
  """Refused with one line before anything compiles or encodes."""
  before = blend_loop.denoise_blended_jit._cache_size()
  base = dict(prompt='a fox', height=H, width=W, num_frames=33, temporal_tile_size=12,
              temporal_overlap=4, sigmas=[1.0, 0.5, 0.0], progress=False)
  base.update(kwargs)
  with pytest.raises(ValueError, match=message) as e:
    LTXLongVideoPipeline(pipe)(**base)
  assert isinstance(e.value, UsageError) or 'cannot read' in str(e.value)
  assert '\n' not in str(e.value)
  assert blend_loop.denoise_blended_jit._cache_size() == before


def test_chunked_decode_is_the_vae_tiling(pipe):
  """The host-blended temporal chunks equal the VAE's own temporal tiling (same tiles and
  ramps), within one uint8 step."""
  import jax.numpy as jnp
  from ltx_jax.models.vae.tiling import TilingConfig, to_uint8
  long_pipe = LTXLongVideoPipeline(pipe)
  z = np.random.default_rng(0).standard_normal((1, 9, HL, WL, LATENT)).astype(np.float32)
  spatial = TilingConfig(spatial_tile=8, spatial_overlap=1, temporal_tile=2, temporal_overlap=1)
  ours = long_pipe.decode(z, 0.05, None, tiling=spatial, temporal_tile=4, temporal_overlap=1,
                          last_frame_fix=False)
  vae = pipe.vae
  want = vae.decode(vae.denormalize(jnp.asarray(z)), jnp.full((1,), 0.05), tiling=TilingConfig(
      spatial_tile=8, spatial_overlap=1, temporal_tile=4, temporal_overlap=1))
  want = np.asarray(to_uint8(want))
  assert ours.shape == want.shape == (1, 33, H, W, 3)
  assert np.abs(ours.astype(int) - want.astype(int)).max() <= 1


def test_cli_long_video(tmp_path):
  """configs/long.py's keys on the smoke model: one video of three windows with a prompt per
  window from a file; the refusals name config.long_video.*."""
  import importlib.util
  import json
  from pathlib import Path
  from ltx_jax import video_io
  from ltx_jax.cli import config as config_lib
  from ltx_jax.cli import run
  root = Path(__file__).resolve().parents[1]
  spec = importlib.util.spec_from_file_location('long', root / 'configs' / 'long.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().long_video.enabled
  c = module.get_config('')
  c.model.source, c.model.dtype, c.model.hash_files = config_lib.SMOKE, 'float32', False
  c.height, c.width, c.num_frames, c.frame_rate = 64, 96, 41, 8.0  # 6 latent frames
  c.long_video.temporal_tile_size, c.long_video.temporal_overlap = 24, 8  # windows of 3
  c.num_inference_steps, c.timesteps, c.guidance_scale = 2, (), 1.0
  c.max_sequence_length, c.seeds, c.progress = 16, (0,), False
  c.output_dir = str(tmp_path / 'out')
  windows = tmp_path / 'windows.txt'
  windows.write_text('a cat on a mat\n# skipped\na dog in the park\n')
  c.long_video.prompt_file = str(windows)
  (video,) = run.run(c)
  assert video_io.read_mp4_info(video)['frames'] == 41
  meta = json.loads(video.with_suffix('.json').read_text())
  assert meta['prompt'] == 'a cat on a mat | a dog in the park'
  assert meta['pipeline_kwargs']['temporal_tile_size'] == 24
  for key, value, message in (
      ('temporal_overlap', 80, r'config\.long_video\.temporal_overlap=80 must be below'),
      ('adain_factor', 1.5, r'config\.long_video\.adain_factor=1.5'),
      ('prompt_file', str(tmp_path / 'none.txt'), r'cannot read config\.long_video')):
    bad = module.get_config('')
    bad.update_from_flattened_dict({f'long_video.{key}': value})
    bad.model.source, bad.output_dir = config_lib.SMOKE, str(tmp_path / 'bad')
    with pytest.raises(UsageError, match=message):
      config_lib.check(bad)
