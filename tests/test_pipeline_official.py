"""Generation against Lightricks' own LTXVideoPipeline: rectified-flow schedules, causal
temporal positions, CFG with spatio-temporal guidance and its rescaling, per-step guidance."""

import json

import numpy as np
import pytest
import torch

from builders import LATENT, TEXT_DIM, official_single_file
from conftest import rel_l2
from ltx_jax import load_transformer, load_vae
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import SchedulerConfig

H, W, FRAMES = 32, 48, 9
GRID = (3, 4, 6)
SCHEDULERS = {
    'uniform-sd3': dict(_class_name='RectifiedFlowScheduler', num_train_timesteps=1000,
                        shifting='SD3', sampler='Uniform', target_shift_terminal=0.1),
    'linear-quadratic': dict(_class_name='RectifiedFlowScheduler', num_train_timesteps=1000,
                             shifting=None, sampler='LinearQuadratic'),
}


@pytest.fixture(scope='module', params=sorted(SCHEDULERS))
def setup(request, tmp_path_factory):
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  path = tmp_path_factory.mktemp('official') / 'ltxv-tiny.safetensors'
  transformer, vae, scheduler = official_single_file(path, SCHEDULERS[request.param])
  ref = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler,
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  cfg = json.loads(json.dumps(SCHEDULERS[request.param]))
  ours = LTXPipeline(load_transformer(path), load_vae(path), scheduler=SchedulerConfig
                     .from_official(cfg))
  return ref, ours


def texts(seed=0, length=6):
  rng = np.random.default_rng(seed)
  e = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  n = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  m = np.array([[1, 1, 1, 1, 0, 0]])
  nm = np.array([[1, 1, 0, 0, 0, 0]])
  return e, m, n, nm


@pytest.mark.parametrize('guidance', [
    dict(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=[1],
         strategy='attention_values'),
    dict(guidance_scale=[1.0, 4.0], stg_scale=[0.0, 1.5], rescaling_scale=[1.0, 0.5],
         skip_block_list=[[0], [1]], guidance_timesteps=[1.0, 0.5],
         strategy='transformer_block', cfg_star_rescale=True),
], ids=['cfg-stg', 'per-step'])
def test_official_parity(setup, guidance, highest_precision):
  from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
  ref, ours = setup
  guidance = dict(guidance)  # parametrize shares the dict between cases
  e, m, n, nm = texts()
  strategy = guidance.pop('strategy')
  theirs_strategy = {'attention_values': SkipLayerStrategy.AttentionValues,
                     'transformer_block': SkipLayerStrategy.TransformerBlock}[strategy]
  steps = 4
  gen = torch.Generator().manual_seed(3)
  noise = torch.randn((1, int(np.prod(GRID)), LATENT), generator=torch.Generator().manual_seed(3))
  t = torch.from_numpy
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=steps,
                decode_timestep=0.05, decode_noise_scale=0.0)
  with torch.no_grad():
    out = ref(prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
              negative_prompt_attention_mask=t(nm), negative_prompt=None, generator=gen,
              output_type="latent",
              is_video=True, vae_per_channel_normalize=True, skip_layer_strategy=theirs_strategy,
              **common, **guidance).images
  want = out.permute(0, 2, 3, 4, 1).numpy()  # [B, F', H', W', C]
  gt = guidance.pop('guidance_timesteps', None)
  kw = dict(guidance_scale=guidance.pop('guidance_scale'), stg_scale=guidance.pop('stg_scale'),
            stg_rescale=guidance.pop('rescaling_scale'),
            skip_block_list=guidance.pop('skip_block_list'), skip_layer_strategy=strategy,
            guidance_timesteps=None if gt is None else [1000 * v for v in gt], **guidance)
  got = ours(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
             negative_prompt_attention_mask=nm, latents=noise.numpy().reshape(1, *GRID, LATENT),
             output_type='latent', progress=False, **common, **kw)
  err = rel_l2(got.latents, want)
  print(f"official pipeline latents rel L2 {err:.2e}")
  assert err < 1e-4
