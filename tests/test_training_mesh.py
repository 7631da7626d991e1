"""Training on meshes of simulated CPU devices equals one device (tests/training_mesh_worker.py
in a subprocess with 4 devices): loss and gradients of a step, loss and parameters after two
optimizer steps, to 1e-5; and configurations the step cannot run are refused by name before
anything compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from ltx_jax.errors import UsageError
from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
from ltx_jax.training import (FullConfig, LoraConfig, ObjectiveConfig, OptimizerConfig,
                              TrainConfig, Trainer)

WORKER = Path(__file__).parent / 'training_mesh_worker.py'


@pytest.mark.slow
def test_meshes_equal_one_device(tmp_path):
  out = tmp_path / 'report.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.run([sys.executable, str(WORKER), str(out)], env=env, capture_output=True,
                        text=True, timeout=2400)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  report = json.loads(out.read_text())
  for name, r in report.items():
    print(name, {k: v for k, v in r.items() if k not in ('placed', 'refused')})
    for key in ('loss0', 'grads', 'losses', 'params'):
      assert r[key] <= 1e-5, (name, key, r[key])
  # the factors follow their kernels' rules (fsdp on the model width)
  placed = report['data2_fsdp2']['placed']
  assert 'fsdp' in placed['blocks.attn1.to_q.lora.a'], placed
  assert 'data x fsdp = 4' in report['data2_fsdp2']['refused']  # 2 rows per micro-batch


def tiny():
  config = TransformerConfig(num_layers=2, num_heads=2, head_dim=8, in_channels=8,
                             out_channels=8, cross_attention_dim=16, caption_channels=24)
  return nnx.eval_shape(lambda: LTXVideoTransformer(config, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize('make,words', [
    (lambda: LoraConfig(rank=0), 'rank'),
    (lambda: LoraConfig(targets=()), 'targets'),
    (lambda: LoraConfig(dropout=1.0), 'dropout'),
    (lambda: ObjectiveConfig(first_frame_p=1.5), 'first_frame_p'),
    (lambda: ObjectiveConfig(first_frame_p=-0.1), 'first_frame_p'),
    (lambda: OptimizerConfig(learning_rate=0.0), 'learning_rate'),
    (lambda: TrainConfig(remat='some'), 'remat'),
    (lambda: TrainConfig(accumulation=0), 'accumulation'),
])
def test_bad_configs(make, words):
  with pytest.raises(UsageError, match=words):
    make()


def test_target_matching_nothing_lists_names():
  with pytest.raises(UsageError) as e:
    Trainer(tiny(), TrainConfig(LoraConfig(targets=('to_qq',))))
  assert 'transformer_blocks.{i}.attn1.to_q' in str(e.value) and 'to_qq' in str(e.value)
  with pytest.raises(UsageError, match='match no layer'):
    Trainer(tiny(), TrainConfig(LoraConfig(targets=r'.*\.attn3\..*')))
  with pytest.raises(UsageError, match='match no layer'):
    Trainer(tiny(), TrainConfig(FullConfig(targets=('norm_z',))))


def test_batch_the_mesh_does_not_divide():
  import jax
  from ltx_jax import sharding
  mesh = sharding.make_mesh()  # one device: data x fsdp = 1 divides anything
  trainer = Trainer(tiny(), TrainConfig(LoraConfig(rank=2), accumulation=2), mesh=mesh)
  batch = dict(latents=np.zeros((3, 2, 2, 2, 8), np.float32), context=np.zeros((3, 4, 24)),
               context_mask=np.ones((3, 4), np.int32), frame_rate=np.full(3, 25.0))
  with pytest.raises(UsageError, match='accumulation'):
    trainer.place(batch)
  with pytest.raises(UsageError, match='lacks'):
    trainer.place({k: v for k, v in batch.items() if k != 'frame_rate'})
