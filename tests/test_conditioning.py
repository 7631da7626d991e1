"""Conditioning items: `Condition` checks, and the latent side against the official
`LTXVideoPipeline.prepare_conditioning` / `add_noise_to_image_conditioning_latents`."""

import json
import types

import numpy as np
import pytest

from conftest import randomize_torch_module
from ltx_jax.errors import UsageError
from ltx_jax.pipeline.conditioning import (Condition, EncodedCondition, check_conditions,
                                           combine_conditions, extra_noise_shape,
                                           noise_hard_conditions, token_timesteps,
                                           tokens_to_step)

torch = pytest.importorskip('torch')

# A tiny official VAE with the released temporal compression (8: the official sequence handling
# hard-codes it) and spatial compression 8.
TINY_VAE = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
    latent_channels=8, norm_layer='pixel_norm', latent_log_var='uniform',
    use_quant_conv=False, scaling_factor=1.0, patch_size=2, encoder_base_channels=4,
    decoder_base_channels=4, spatial_padding_mode='zeros', timestep_conditioning=False,
    causal_decoder=False,
    encoder_blocks=[['compress_all_res', {'multiplier': 2}], ['compress_all_res', {'multiplier': 2}],
                    ['compress_time_res', {'multiplier': 2}]],
    decoder_blocks=[['compress_time', {}], ['compress_all', {}], ['compress_all', {}]])
FRAMES, H, W = 33, 64, 96  # latents 5 x 8 x 12


@pytest.fixture(scope='module')
def official():
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(TINY_VAE))).float().eval()
  randomize_torch_module(vae, seed=3)
  vae.requires_grad_(False)
  g = torch.Generator().manual_seed(4)
  vae.register_buffer('std_of_means', torch.rand(8, generator=g) + 0.5)
  vae.register_buffer('mean_of_means', torch.randn(8, generator=g) * 0.3)
  assert (vae.temporal_downscale_factor, vae.spatial_downscale_factor) == (8, 8)

  class Official:
    """The official conditioning methods on the attributes they read."""
    prepare_conditioning = LTXVideoPipeline.prepare_conditioning
    _resize_conditioning_item = LTXVideoPipeline.__dict__['_resize_conditioning_item']
    _get_latent_spatial_position = LTXVideoPipeline._get_latent_spatial_position
    _handle_non_first_conditioning_sequence = \
        LTXVideoPipeline.__dict__['_handle_non_first_conditioning_sequence']

    def __init__(self, causal):
      self.vae = vae
      self.patchifier = SymmetricPatchifier(patch_size=1)
      self.transformer = types.SimpleNamespace(
          config=types.SimpleNamespace(causal_temporal_positioning=causal),
          use_tpu_flash_attention=False)
      self.vae_scale_factor = 8
  return Official


def _media(frames, h=H, w=W, seed=0):
  g = torch.Generator().manual_seed(seed)
  return torch.rand((1, 3, frames, h, w), generator=g) * 2 - 1


# (frames, frame_index, strength, media_x, media_y, media height, width) per item
CASES = {
    'first_hard': [(1, 0, 1.0, None, None, H, W)],
    'first_soft': [(1, 0, 0.6, None, None, H, W)],
    'last_keyframe': [(1, 32, 1.0, None, None, H, W)],
    'middle_keyframe': [(1, 13, 0.7, None, None, H, W)],
    'segment_first': [(9, 0, 1.0, None, None, H, W)],
    'segment_last': [(17, 16, 0.9, None, None, H, W)],
    'segment_prefix_only': [(9, 24, 1.0, None, None, H, W)],
    'two_items': [(1, 0, 1.0, None, None, H, W), (1, 32, 0.8, None, None, H, W)],
    'placed': [(1, 0, 1.0, 16, 8, 32, 48)],
    'placed_centred': [(9, 0, 0.5, None, 0, 32, 48)],
}


# Non-causal coordinates (causal_temporal_positioning off) matter for the extra tokens only.
@pytest.mark.parametrize('case, causal', [(c, True) for c in sorted(CASES)] +
                         [('middle_keyframe', False), ('segment_last', False)])
def test_combine_matches_official(official, case, causal):
  from ltx_video.models.autoencoders.vae_encode import vae_encode
  from ltx_video.pipelines.pipeline_ltx_video import ConditioningItem
  spec = CASES[case]
  media = [_media(f, h, w, seed=i) for i, (f, _, _, _, _, h, w) in enumerate(spec)]
  init = torch.randn((1, 8, 5, 8, 12), generator=torch.Generator().manual_seed(9))

  # Our side: the same encodings (the encoder samples from the global generator, in item
  # order, as prepare_conditioning does) and the same extra-token noise, in item order.
  torch.manual_seed(100)
  encoded = [vae_encode(m, official(causal).vae, vae_per_channel_normalize=True) for m in media]
  g = torch.Generator().manual_seed(7)
  items, noise = [], []
  for z, (_, frame, s, x, y, _, _) in zip(encoded, spec):
    item = EncodedCondition(z.permute(0, 2, 3, 4, 1).numpy(), frame, s, x, y)
    shape = extra_noise_shape(item)
    if shape is not None:  # the official draws it channels-first
      b, f, h, w, c = shape
      noise.append(torch.randn((b, c, f, h, w), generator=g).permute(0, 2, 3, 4, 1).numpy())
    else:
      noise.append(None)
    items.append(item)
  ours = combine_conditions(init.permute(0, 2, 3, 4, 1).numpy(), items, noise, temporal=8,
                            spatial=8, causal=causal)

  ref_self = official(causal)
  if any(x is not None or y is not None for _, _, _, x, y, _, _ in spec):
    # The official pipeline resizes every item to the frame first and refuses a non-zero
    # media_x / media_y there, so placement is reachable only past that step.
    ref_self._resize_conditioning_item = lambda item, h, w: item
  torch.manual_seed(100)
  cond_items = [ConditioningItem(m, frame, s, x, y)
                for m, (_, frame, s, x, y, _, _) in zip(media, spec)]
  lat, coords, mask, n_extra = ref_self.prepare_conditioning(
      cond_items, init.clone(), FRAMES, H, W, vae_per_channel_normalize=True,
      generator=torch.Generator().manual_seed(7))

  assert ours.num_extra == n_extra
  np.testing.assert_array_equal(ours.coords, coords.numpy().astype(np.float32))
  np.testing.assert_array_equal(ours.mask, mask.numpy())
  # torch.lerp may fuse its multiply-add: one float32 rounding apart at most.
  np.testing.assert_allclose(ours.latents, lat.numpy(), rtol=3e-7, atol=1e-6)
  # The video's own tokens come last, the extra ones first.
  assert ours.latents.shape == (1, n_extra + 5 * 8 * 12, 8)


def test_noise_hard_conditions_matches_official():
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  g = torch.Generator().manual_seed(0)
  init, latents = torch.randn((2, 30, 8), generator=g), torch.randn((2, 30, 8), generator=g)
  mask = torch.tensor(np.random.default_rng(0).choice([0.0, 0.6, 1.0, 1 - 1e-7], (2, 30)),
                      dtype=torch.float32)
  t = torch.tensor(0.7312, dtype=torch.float32)
  ref = LTXVideoPipeline.add_noise_to_image_conditioning_latents(
      t, init, latents, 0.15, mask, torch.Generator().manual_seed(5))
  noise = torch.randn((2, 30, 8), generator=torch.Generator().manual_seed(5))
  ours = noise_hard_conditions(t.numpy(), init.numpy(), latents.numpy(), mask.numpy(),
                               noise.numpy(), 0.15)
  np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=0, atol=1e-7)
  assert not np.allclose(np.asarray(ours), latents.numpy())  # some tokens were re-noised
  keep = mask.numpy() < 1 - 1e-6
  np.testing.assert_array_equal(np.asarray(ours)[keep], latents.numpy()[keep])


# -- checks ------------------------------------------------------------------------------------

IMG = np.zeros((64, 96, 3), np.uint8)


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'exactly one of image= and video=, got neither'),
    (dict(image=IMG, video='a.mp4'), 'exactly one of image= and video=, got both'),
    (dict(image=IMG, strength=1.5), r'strength=1.5 must be a number in \[0, 1\]'),
    (dict(image=IMG, strength=-0.1), r'strength=-0.1 must be'),
    (dict(image=IMG, strength='x'), r"strength='x' must be"),
    (dict(image=IMG, frame_index=2.0), r'frame_index=2.0 must be an int \(negative: from the end'),
    (dict(image=IMG, media_x=-3), 'media_x=-3 must be an int >= 0 or None'),
    (dict(image=IMG, media_y=1.5), 'media_y=1.5 must be an int >= 0 or None'),
    (dict(image=IMG.astype(np.float32)), r'image array must be uint8 \[H, W, 3\]'),
    (dict(video=IMG), r'video array must be uint8 \[F, H, W, 3\]'),
])
def test_condition_refuses(kwargs, match):
  with pytest.raises(UsageError, match=match) as e:
    Condition(**kwargs)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('cond, size, match', [
    (Condition(image='k.png', frame_index=33), (1, 64, 96), r'frame_index=33 is outside the video \(frames 0..32\)'),
    (Condition(video='v.mp4', frame_index=0), (10, 64, 96), 'a segment of 10 frames is not 8N\\+1 \\(trim it to 9 frames\\)'),
    (Condition(video='v.mp4', frame_index=24), (17, 64, 96), r'17 frames from frame 24 run past the end of the 33-frame video \(last start: 16\)'),
    (Condition(video='v.mp4', frame_index=4), (9, 64, 96), 'must start on a multiple of 8, got frame_index=4'),
    (Condition(image='k.png'), (1, 32, 96), 'media is 96x32, the video 96x64'),
    (Condition(image='k.png', frame_index=8, media_x=0), (1, 32, 32), 'frame 0 only'),
    (Condition(image='k.png', media_x=80), (1, 32, 32), 'at x=80, y=16 is outside the 96x64 frame'),
    (Condition(image='k.png', media_y=0), (1, 32, 40), 'multiple of 32 pixels on each side, got 40x32'),
    (Condition(image='k.png', media_x=32, media_y=0), (1, 32, 32), 'keeps no latent'),
])
def test_check_conditions_refuses(cond, size, match):
  with pytest.raises(UsageError, match=match) as e:
    check_conditions([cond], [size], 33, 64, 96, temporal=8, spatial=32)
  assert '\n' not in str(e.value) and cond.source in str(e.value)


def test_check_conditions_accepts():
  conds = [Condition(image='a.png'), Condition(image='b.png', frame_index=32, strength=0.5),
           Condition(video='c.mp4', frame_index=16), Condition(image=IMG, media_x=0, media_y=0)]
  check_conditions(conds, [(1, 64, 96), (1, 64, 96), (17, 64, 96), (1, 64, 64)], 33, 64, 96)


def test_token_timesteps_and_stepped_tokens_match_official():
  """The official loop: timestep min(t, 1 - mask) per token; denoising_step keeps the tokens
  with t - 1e-6 >= 1 - mask."""
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  mask = torch.tensor([[0.0, 0.6, 1.0, 0.3, 0.0]])
  latents, stepped = torch.zeros((1, 5, 2)), torch.ones((1, 5, 2))
  scheduler = types.SimpleNamespace(step=lambda *a, **k: (stepped,))
  fake = types.SimpleNamespace(scheduler=scheduler)
  for t in (1.0, 0.7, 0.4, 0.39999998, 0.0):
    tt = torch.tensor([t], dtype=torch.float32)
    ref_t = torch.min(tt.expand(1).unsqueeze(-1), 1.0 - mask)
    np.testing.assert_array_equal(np.asarray(token_timesteps(tt.numpy()[0], mask.numpy())),
                                  ref_t.numpy())
    ref = LTXVideoPipeline.denoising_step(fake, latents, None, ref_t, mask, tt[0], {})
    np.testing.assert_array_equal(np.asarray(tokens_to_step(tt.numpy()[0], mask.numpy())),
                                  ref[..., 0].numpy() == 1)
