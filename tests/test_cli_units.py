"""Config presets, their mapping onto LTXPipeline arguments, and image-to-video in process."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ltx_jax.cli import config as config_lib
from ltx_jax import presets, video_io
from ltx_jax.cli import run
from ltx_jax.sampling import DISTILLED_0_9_8_FIRST_PASS, guidance

ROOT = Path(__file__).resolve().parents[1]
def load_config(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


@pytest.mark.parametrize('preset', presets.names())
def test_every_preset_passes_the_checks(preset, tmp_path):
  c = load_config('t2v', preset)
  c.output_dir = str(tmp_path)
  assert c.preset == preset and c.model.file.endswith('.safetensors')
  plan = config_lib.check(c)
  assert plan.compression == (8, 32) and len(plan.jobs) == 1
  kw = run.pipeline_kwargs(c)
  assert ('timesteps' in kw) != ('num_inference_steps' in kw)
  if 'guidance_timesteps' in kw:
    n = len(kw['guidance_timesteps'])
    assert len(kw['guidance_scale']) == len(kw['skip_block_list']) == n
  # The pipeline's own guidance checks accept the preset's schedule.
  layers = 48 if '13b' in preset else 28
  steps = kw.get('timesteps') or list(np.linspace(1000, 10, kw['num_inference_steps']))
  guidance.per_step(np.asarray(steps), layers, kw.get('guidance_timesteps'),
                    guidance_scale=kw['guidance_scale'], guidance_rescale=kw['guidance_rescale'],
                    stg_scale=kw['stg_scale'], stg_rescale=kw['stg_rescale'],
                    skip_block_list=kw['skip_block_list'],
                    skip_layer_strategy=kw['skip_layer_strategy'])


def test_default_is_the_2b_distilled_schedule():
  c = load_config('t2v')
  assert c.preset == 'ltxv-2b-0.9.8-distilled'
  assert c.model.file == 'ltxv-2b-0.9.8-distilled.safetensors'
  kw = run.pipeline_kwargs(c)
  # One pass (--config.multi_scale=False): the single distilled pass, finished at 0.03.
  assert kw['timesteps'] == list(presets.DISTILLED_SINGLE_PASS)
  np.testing.assert_allclose(c.first_pass.timesteps, np.array(DISTILLED_0_9_8_FIRST_PASS) * 1000)
  assert kw['guidance_scale'] == 1.0 and kw['stg_scale'] == 0.0
  assert (kw['decode_timestep'], kw['decode_noise_scale']) == (0.05, 0.025)
  assert kw['max_sequence_length'] == 256 and kw['frame_rate'] == 30.0


def test_i2v_in_process(tmp_path):
  image = tmp_path / 'first.png'
  from PIL import Image
  Image.fromarray(np.tile(np.arange(96, dtype=np.uint8)[None, :, None], (64, 1, 3))).save(image)
  c = load_config('smoke', 'i2v')
  c.image = str(image)
  c.output_dir = str(tmp_path / 'out')
  c.progress = False
  (video,) = run.run(c)
  info = video_io.read_mp4_info(video)
  assert (info['frames'], info['width'], info['height']) == (9, 96, 64)
  meta = json.loads(video.with_suffix('.json').read_text())
  assert meta['image'] == str(image) and 'image_encoding' in meta['timings']['run']['seconds']
