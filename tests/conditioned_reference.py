"""LTX-Video-Trainer's ReferenceVideoTrainingStrategy (training_strategies.py, ltxv_utils.py)
in PyTorch, for the IC-LoRA parity test: the joined sequence's coordinates, noising, timesteps
and the loss on the target's tokens, through diffusers' LTXVideoTransformer3DModel."""

import numpy as np
import torch


def official_coords(f, h, w, batch, fps, multiplier=2):
  """prepare_video_coordinates(sequence_multiplier=2) pre-scaled by get_rope_scale_factors:
  [B, 3, multiplier * f*h*w]."""
  grid = torch.meshgrid(torch.arange(f, dtype=torch.float32),
                        torch.arange(h, dtype=torch.float32),
                        torch.arange(w, dtype=torch.float32), indexing='ij')
  single = torch.stack([g.flatten() for g in grid], dim=-1)  # [N, 3]
  raw = torch.cat([single] * multiplier, dim=0).unsqueeze(0).expand(batch, -1, -1)
  scale = [8.0 / fps, 32.0, 32.0]
  return torch.stack([raw[..., i] * scale[i] for i in range(3)], dim=1)


def reference_video_loss(model, latents, reference, context, context_mask, frame_rate, noise,
                         sigmas, cond):
  """latents, reference [B, F, H, W, C] (numpy), noise [B, N, C], sigmas [B], cond [B, N]
  (the target's first-frame mask) -> loss, as ReferenceVideoTrainingStrategy.prepare_batch +
  compute_loss."""
  b, f, h, w, c = latents.shape
  target = torch.from_numpy(np.ascontiguousarray(latents.reshape(b, f * h * w, c)))
  ref = torch.from_numpy(np.ascontiguousarray(reference.reshape(b, f * h * w, c)))
  noise = torch.from_numpy(np.asarray(noise))
  target_cond = torch.from_numpy(np.asarray(cond, bool))
  s = torch.from_numpy(np.asarray(sigmas, np.float32)).view(-1, 1, 1)
  cond_all = torch.cat([torch.ones(b, ref.shape[1], dtype=torch.bool), target_cond], dim=1)
  sampled = torch.round(s.squeeze(-1).squeeze(-1) * 1000.0).long()
  timesteps = torch.where(cond_all, 0, sampled.unsqueeze(1).expand_as(cond_all))
  noisy = (1 - s) * target + s * noise
  noisy = torch.where(target_cond.unsqueeze(-1), target, noisy)
  targets = noise - target
  combined = torch.cat([ref, noisy], dim=1)
  fps = float(frame_rate[0])
  coords = official_coords(f, h, w, b, fps)
  pred = model(hidden_states=combined, encoder_hidden_states=torch.from_numpy(context),
               timestep=timesteps, encoder_attention_mask=torch.from_numpy(context_mask),
               num_frames=f, height=h, width=w, rope_interpolation_scale=[8.0 / fps, 32.0, 32.0],
               video_coords=coords, return_dict=False)[0]
  n = targets.shape[1]
  loss = (pred[:, -n:] - targets).pow(2)
  mask = (~cond_all[:, -n:].unsqueeze(-1)).float()
  return loss.mul(mask).div(mask.mean()).mean()
