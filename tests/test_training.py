"""Training against the official trainer's maths: one step's loss and gradients against
diffusers' LTXVideoTransformer3DModel + PEFT with LTX-Video-Trainer's standard-strategy formulas
(tests/training_reference.py), LoRA and full fine-tuning, first-frame conditioning on and off,
padded text masks; f32 'highest'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import randomize_torch_module, rel_l2
from ltx_jax import load_transformer
from ltx_jax.training import (Draws, FullConfig, LoraConfig, ObjectiveConfig, OptimizerConfig,
                              TrainConfig, Trainer)
from training_reference import peft_factor_paths, reference_loss, torch_grads_as_ours

GRID = (3, 2, 3)  # latent frames, height, width
N = int(np.prod(GRID))
TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2')


def config(heads=2, head_dim=8, layers=2):
  return dict(in_channels=8, out_channels=8, num_attention_heads=heads,
              attention_head_dim=head_dim, cross_attention_dim=heads * head_dim,
              num_layers=layers, caption_channels=24)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  from diffusers import LTXVideoTransformer3DModel
  tmp = tmp_path_factory.mktemp('train')
  ref = LTXVideoTransformer3DModel(**config()).eval()
  randomize_torch_module(ref, seed=3, std=0.1)
  ref.save_pretrained(tmp / 'transformer')
  return tmp


def fresh_reference(model_dir):
  from diffusers import LTXVideoTransformer3DModel
  return LTXVideoTransformer3DModel.from_pretrained(model_dir / 'transformer')


def make_batch(seed=0, rows=2):
  rng = np.random.default_rng(seed)
  mask = np.ones((rows, 6), np.int32)
  mask[0, 4:] = 0  # a padded prompt
  return dict(latents=rng.standard_normal((rows, *GRID, 8)).astype(np.float32),
              context=rng.standard_normal((rows, 6, 24)).astype(np.float32),
              context_mask=mask, frame_rate=np.full((rows,), 25.0, np.float32))


def make_draws(seed=1, rows=2, first_frame=False):
  rng = np.random.default_rng(seed)
  cond = np.zeros((rows, N), bool)
  if first_frame:
    cond[:, :GRID[1] * GRID[2]] = True
  return Draws(rng.standard_normal((rows, N, 8)).astype(np.float32),
               rng.uniform(0.05, 0.95, rows).astype(np.float32), cond)


def flat(tree):
  return {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(tree)}


def with_values(tree, values):
  """A copy of an nnx.State with some leaves replaced ({path: array})."""
  items = [(p, v.replace(jnp.asarray(values[tuple(p)], v.get_value().dtype))
            if tuple(p) in values else v) for p, v in nnx.to_flat_state(tree)]
  return nnx.State.from_flat_path(dict(items))


def peft_reference(model_dir, seed=7, rank=4, alpha=8.0):
  from peft import LoraConfig as PeftConfig
  ref = fresh_reference(model_dir)
  ref.add_adapter(PeftConfig(r=rank, lora_alpha=alpha, target_modules=list(TARGETS),
                             init_lora_weights=True))
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():  # B non-zero, so A gets gradients too
    for name, p in ref.named_parameters():
      if 'lora_' in name:
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
  return ref


def lora_trainer(model_dir, ref, rank=4, alpha=8.0, **kw):
  model = load_transformer(model_dir)
  trainer = Trainer(model, TrainConfig(LoraConfig(rank=rank, alpha=alpha, targets=TARGETS),
                                       **kw))
  modules = dict(ref.named_modules())
  values = {}
  for pa, pb, index, name in peft_factor_paths(trainer):
    a = modules[name].lora_A['default'].weight.detach().numpy().T  # [in, r]
    b = modules[name].lora_B['default'].weight.detach().numpy().T  # [r, out]
    for path, v in ((pa, a), (pb, b)):
      cur = values.get(path, flat(trainer.params)[path].copy())
      if index is None:
        cur = v
      else:
        cur[index] = v
      values[path] = cur
  state = trainer.init_state()
  return trainer, state._replace(params=with_values(state.params, values))


@pytest.mark.slow
def test_lora_step_matches_peft(model_dir, highest_precision):
  ref = peft_reference(model_dir)
  trainer, state = lora_trainer(model_dir, ref)
  batch = make_batch()
  modules = dict(ref.named_modules())
  for first_frame in (False, True):
    draws = make_draws(first_frame=first_frame)
    ref.zero_grad()
    want = reference_loss(ref, batch['latents'], batch['context'], batch['context_mask'],
                          batch['frame_rate'], *draws)
    want.backward()
    loss, grads = trainer.loss_and_grads(state, trainer.place(batch), draws)
    assert abs(float(loss) - want.item()) / want.item() <= 1e-6, (float(loss), want.item())
    got = flat(grads)
    worst = 0.0
    for pa, pb, index, name in peft_factor_paths(trainer):
      for path, layer in ((pa, modules[name].lora_A), (pb, modules[name].lora_B)):
        g = got[path] if index is None else got[path][index]
        err = rel_l2(g, layer['default'].weight.grad.numpy().T)
        worst = max(worst, err)
        assert err <= 1e-5, (name, path[-1], err)
    # the same layers adapted as PEFT's (per block: attn1 and attn2 x 4, ff x 2)
    assert {t[3] for t in peft_factor_paths(trainer)} == {
        n for n, m in modules.items() if hasattr(m, 'lora_A')}
    print(f'LoRA first_frame={first_frame}: loss rel err '
          f'{abs(float(loss) - want.item()) / want.item():.2e}, worst grad rel L2 {worst:.2e}')


@pytest.mark.slow
def test_full_step_matches_torch(model_dir, highest_precision):
  ref = fresh_reference(model_dir)
  model = load_transformer(model_dir)
  trainer = Trainer(model, TrainConfig(FullConfig()))
  state = trainer.init_state()
  batch = make_batch(2)
  for first_frame in (False, True):
    draws = make_draws(3, first_frame=first_frame)
    ref.zero_grad()
    want = reference_loss(ref, batch['latents'], batch['context'], batch['context_mask'],
                          batch['frame_rate'], *draws)
    want.backward()
    loss, grads = trainer.loss_and_grads(state, trainer.place(batch), draws)
    assert abs(float(loss) - want.item()) / want.item() <= 1e-6
    got = flat(grads)
    expected = torch_grads_as_ours(model, ref, got)
    errs = {'.'.join(map(str, p)): rel_l2(got[p], expected[p]) for p in got}
    assert max(errs.values()) <= 1e-5, sorted(errs.items(), key=lambda kv: -kv[1])[:3]
    covered = {t.diffusers for t in trainer.selection.targets if t.path in got}
    assert covered == {n for n, _ in ref.named_parameters()}  # every parameter compared
    print(f'full first_frame={first_frame}: loss rel err '
          f'{abs(float(loss) - want.item()) / want.item():.2e}, worst grad rel L2 '
          f'{max(errs.values()):.2e}')


@pytest.mark.slow
def test_five_steps_match_torch_adamw(model_dir, highest_precision):
  """Five optimizer steps (clipping active, linear schedule over the run) against torch AdamW +
  LinearLR + clip_grad_norm_ on the PEFT reference; different draws each step."""
  from training_reference import torch_scheduler
  ref = peft_reference(model_dir, seed=11)
  opt_config = OptimizerConfig(learning_rate=3e-3, steps=5, schedule='linear', max_grad_norm=0.05)
  trainer, state = lora_trainer(model_dir, ref, optimizer=opt_config)
  start = flat(state.params)
  params = [p for n, p in ref.named_parameters() if 'lora_' in n]
  for p in ref.parameters():
    p.requires_grad_(False)
  for p in params:
    p.requires_grad_(True)
  opt = torch.optim.AdamW(params, lr=3e-3)
  sched = torch_scheduler(opt, 'linear', 5)
  batch = make_batch(4)
  norms = []
  for k in range(5):
    draws = make_draws(20 + k, first_frame=k % 2 == 1)
    opt.zero_grad()
    loss = reference_loss(ref, batch['latents'], batch['context'], batch['context_mask'],
                          batch['frame_rate'], *draws)
    loss.backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(params, 0.05)))
    opt.step()
    sched.step()
    state, metrics = trainer.step(state, trainer.place(batch), draws)
    assert abs(float(metrics['loss']) - loss.item()) <= 1e-5 * loss.item()
  assert min(norms) > 0.05  # clipping did act
  got = flat(state.params)
  modules = dict(ref.named_modules())
  worst = worst_change = 0.0
  for pa, pb, index, name in peft_factor_paths(trainer):
    for path, layer in ((pa, modules[name].lora_A), (pb, modules[name].lora_B)):
      g = got[path] if index is None else got[path][index]
      s0 = start[path] if index is None else start[path][index]
      want = layer['default'].weight.detach().numpy().T
      worst = max(worst, rel_l2(g, want))
      worst_change = max(worst_change, rel_l2(g - s0, want - s0))
  assert worst <= 1e-5, worst
  print(f'5 AdamW steps: params rel L2 {worst:.2e}, their change rel L2 {worst_change:.2e}')
