"""The official trainer's standard strategy in PyTorch, for parity tests and the benchmark:
diffusers' LTXVideoTransformer3DModel (+ PEFT LoRA), the strategy's noising, timesteps,
first-frame mask and masked loss (LTX-Video-Trainer training_strategies.py), torch AdamW, the
official schedulers and clip_grad_norm_."""

import numpy as np
import torch

from ltx_jax.models.transformer import DIFFUSERS_TABLE
from ltx_jax.weights.loader import plan_from_table


def reference_loss(model, latents, context, context_mask, frame_rate, noise, sigmas, cond,
                   device='cpu', dtype=None):
  """latents [B, F, H, W, C] (numpy), noise [B, N, C], sigmas [B], cond [B, N] bool -> loss
  (a torch scalar with its graph), as StandardTrainingStrategy.prepare_batch + compute_loss.
  device, dtype: where the inputs go and the compute dtype of the model's inputs (None: f32)."""
  b, f, h, w, c = latents.shape
  put = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
  x0 = put(latents.reshape(b, f * h * w, c))
  noise = put(np.asarray(noise))
  cond = put(np.asarray(cond, bool))
  s = put(np.asarray(sigmas, np.float32)).view(-1, 1, 1)
  noisy = (1 - s) * x0 + s * noise
  noisy = torch.where(cond.unsqueeze(-1), x0, noisy)
  targets = noise - x0
  sampled = torch.round(s.squeeze(-1).squeeze(-1) * 1000.0).long()
  timesteps = torch.where(cond, 0, sampled.unsqueeze(1).expand_as(cond))
  fps = float(frame_rate[0])
  cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
  pred = model(hidden_states=cast(noisy), encoder_hidden_states=cast(put(context)),
               timestep=timesteps, encoder_attention_mask=put(context_mask),
               num_frames=f, height=h, width=w, rope_interpolation_scale=[8.0 / fps, 32.0, 32.0],
               video_coords=None, return_dict=False)[0]
  loss = (pred.float() - targets).pow(2)
  mask = (~cond.unsqueeze(-1)).float()
  return loss.mul(mask).div(mask.mean()).mean()


def torch_scheduler(optimizer, name: str, steps: int, params: dict | None = None):
  """The official trainer's _create_scheduler (None for 'constant')."""
  from torch.optim import lr_scheduler as s
  p = dict(params or {})
  if name == 'linear':
    return s.LinearLR(optimizer, start_factor=p.pop('start_factor', 1.0),
                      end_factor=p.pop('end_factor', 0.1), total_iters=steps)
  if name == 'cosine':
    return s.CosineAnnealingLR(optimizer, T_max=steps, eta_min=p.get('eta_min', 0))
  if name == 'cosine_with_restarts':
    return s.CosineAnnealingWarmRestarts(optimizer, T_0=p.pop('T_0', steps // 4),
                                         T_mult=p.pop('T_mult', 1), eta_min=p.pop('eta_min', 5e-5))
  if name == 'polynomial':
    return s.PolynomialLR(optimizer, total_iters=steps, power=p.pop('power', 1.0))
  if name == 'step':
    return s.StepLR(optimizer, step_size=p.pop('step_size', steps // 2), gamma=p.pop('gamma', 0.1))
  return None


def torch_grads_as_ours(model_jax, torch_model, trainable: dict):
  """{our path: torch grad (or value) in our layout, stacked} for our trainable paths, from a
  diffusers model's parameters; `trainable`: our path -> anything (the keys are used)."""
  plan = plan_from_table(model_jax, DIFFUSERS_TABLE)
  named = dict(torch_model.named_parameters())
  out = {}
  for path in trainable:
    src = plan[path]
    parts = [src.convert(named[k].grad.detach().numpy()) for k in src.keys]
    out[path] = np.stack(parts) if src.stack else parts[0]
  return out


def peft_factor_paths(trainer):
  """[(our a path, our b path, stacked index, PEFT module name)] of a LoRA trainer."""
  return [(t.path + ('lora', 'a'), t.path + ('lora', 'b'), t.index, t.diffusers)
          for t in trainer.selection.targets]


def official_shift(seq_length, min_tokens=1024, max_tokens=4096, min_shift=0.95, max_shift=2.05):
  """LTX-Video-Trainer's ShiftedLogitNormalTimestepSampler._get_shift_for_sequence_length."""
  m = (max_shift - min_shift) / (max_tokens - min_tokens)
  b = min_shift - m * min_tokens
  return m * seq_length + b


def official_sigmas(name: str, n: int, seq_length: int, generator, std=1.0, eps=1e-3,
                    uniform_prob=0.1, min_value=0.0, max_value=1.0):
  """n draws of the official samplers in torch: LTX-Video-Trainer's uniform and
  shifted_logit_normal, the LTX-2 trainer's stretched shifted_logit_normal."""
  if name == 'uniform':
    return torch.rand(n, generator=generator) * (max_value - min_value) + min_value
  mu = official_shift(seq_length)
  s = torch.sigmoid(torch.randn((n,), generator=generator) * std + mu)
  if name == 'shifted_logit_normal':
    return s
  hi = torch.sigmoid(torch.tensor(mu + 3.0902 * std))
  lo = torch.sigmoid(torch.tensor(mu - 2.5758 * std))
  raw = (s - lo) / (hi - lo)
  stretched = torch.clamp(torch.where(raw >= eps, raw, 2 * eps - raw), 0, 1)
  uniform = (1 - eps) * torch.rand((n,), generator=generator) + eps
  prob = torch.rand((n,), generator=generator)
  return torch.where(prob > uniform_prob, stretched, uniform)
