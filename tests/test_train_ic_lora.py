"""IC-LoRA closing the loop with the tiny smoke model: preprocess plain clips with canny
references (python -m ltx_jax.preprocess ... --config.reference=canny), train a reference-video
LoRA a few steps with validation rendered through a guide, export, and generate with the
adapter and a control video (python -m ltx_jax.generate --config configs/control.py ...)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from train_common import ROOT, smoke_config

FRAMES, SIZE, FPS = 9, 64, 8.0


@pytest.mark.slow
def test_canny_clips_to_ic_lora_to_control_generation(tmp_path):
  from ltx_jax import compilation_cache, video_io
  from ltx_jax.cli import preprocess_run, train_run, train_smoke
  from ltx_jax.data import read_index
  from ltx_jax.data.conditions import canny
  from ltx_jax.data.loader import BatchLoader
  from safetensors.numpy import load_file
  compilation_cache.enable_compilation_cache(tmp_path / 'xla')
  t0 = time.perf_counter()
  try:
    # 1. plain clips -> a cache with canny reference latents
    captions = train_smoke.make_clips(tmp_path / 'clips', 2, (FRAMES, SIZE, SIZE), FPS)
    p = preprocess_run.base_config('smoke')
    p.input, p.output_dir = str(captions), str(tmp_path / 'data')
    p.buckets, p.reference, p.progress = f'{SIZE}x{SIZE}x{FRAMES}', 'canny', False
    assert preprocess_run.run(p) == 2
    t1 = time.perf_counter()
    index = read_index(tmp_path / 'data')
    assert all(s['reference'] == 'computed:canny' for s in index.samples)
    assert index.params['reference'] == 'canny'
    batch = next(BatchLoader(tmp_path / 'data', 2, seed=0).iterator())
    assert batch['reference_latents'].shape == batch['latents'].shape
    assert not np.allclose(batch['reference_latents'], batch['latents'])
    # the control video: the canny map of a clip, as a user would make it
    clip = train_smoke.clip(0, (FRAMES, SIZE, SIZE), 0)  # uint8 [F, H, W, 3]
    edges = canny(clip.astype(np.float32) / np.float32(127.5) - 1)
    control = video_io.write_mp4(tmp_path / 'control.mp4',
                                 np.rint((edges + 1) * 127.5).astype(np.uint8), FPS)

    # 2. train the IC-LoRA a few steps, validating with the control video as the guide
    c = smoke_config(tmp_path / 'run', tmp_path / 'data', steps=2, validation=2)
    c.conditioning.mode = 'reference_video'
    c.conditioning.first_frame_conditioning_p = 0.5
    c.validation.prompts = ('a cat sits on the mat',)
    c.validation.reference_videos = (str(control),)
    c.validation.video_dims = (SIZE, SIZE, FRAMES)
    c.validation.inference_steps = 2
    c.validation.skip_initial_validation = True
    result = train_run.run(c)
    t2 = time.perf_counter()
    assert result['step'] == 2 and all(np.isfinite(result['losses']))
    videos = sorted((tmp_path / 'run' / 'validation').rglob('*.mp4'))
    assert videos, 'no validation video'
    comfy = tmp_path / 'run' / 'export' / 'comfyui_lora.safetensors'
    tensors = load_file(comfy)
    assert tensors and all(k.startswith('diffusion_model.transformer_blocks.') and
                           k.endswith(('.lora_A.weight', '.lora_B.weight')) for k in tensors)
    meta = json.loads((tmp_path / 'run' / 'export' / 'training.json').read_text())
    assert meta['conditioning'] == 'reference_video'
  finally:
    compilation_cache.enable_compilation_cache(None)

  # 3. the command line: the control config with the adapter and the control video
  out = tmp_path / 'gen'
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config', str(ROOT / 'configs/control.py'),
         '--config.model.source=smoke', '--config.model.dtype=float32',
         '--config.model.hash_files=False', f'--config.loras={comfy}',
         f'--config.control_video={control}', '--config.prompt=a cat sits on the mat',
         f'--config.height={SIZE}', f'--config.width={SIZE}', f'--config.num_frames={FRAMES}',
         f'--config.frame_rate={FPS}', '--config.num_inference_steps=2',
         '--config.max_sequence_length=32', f'--config.output_dir={out}', '--config.seeds=(0,)',
         '--config.progress=False']
  env = {**os.environ, 'PYTHONPATH': str(ROOT),
         'LTX_JAX_COMPILATION_CACHE': str(tmp_path / 'xla')}  # the programs compiled above
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  print(f"preprocess {t1 - t0:.0f} s, train + validation + export {t2 - t1:.0f} s, generate "
        f"command {time.perf_counter() - t2:.0f} s")
  assert done.returncode == 0, done.stderr[-3000:]
  made = sorted(out.rglob('*.mp4'))
  assert made and made[0].stat().st_size > 0
  sidecar = json.loads(next(out.rglob('*.json')).read_text())
  text = json.dumps(sidecar)
  assert 'comfyui_lora.safetensors' in text and 'control.mp4' in text
