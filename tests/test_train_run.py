"""The training command end to end with the smoke recipe: exact resume after SIGINT, the
README's command (checkpoints, validation videos, TensorBoard, exported adapter read by diffusers
and by the generate command), two processes against one, and refusals."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import rel_l2
from train_common import ROOT, flat_params, load_train_config, smoke_config
from ltx_jax.cli import train_checkpoint, train_config, train_data, train_run
from ltx_jax.errors import DataError, UsageError

STEPS = 4  # 2N


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A persistent compilation cache shared by this module's runs and commands (the same
  programs compile once)."""
  from ltx_jax import compilation_cache
  path = tmp_path_factory.mktemp('xla')
  compilation_cache.enable_compilation_cache(path)
  yield path
  compilation_cache.enable_compilation_cache(None)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory, cache):
  """The smoke recipe's own clip set, preprocessed once with the smoke model."""
  root = tmp_path_factory.mktemp('smoke_data')
  c = smoke_config(root)
  plan = train_config.check(c)
  pipe, _ = train_run.load_pipeline(c, None)
  return train_data.dataset_folder(c, plan, pipe, True)


@pytest.fixture(scope='module')
def straight(tmp_path_factory, dataset):
  """2N steps without interruption."""
  out = tmp_path_factory.mktemp('straight')
  return train_run.run(smoke_config(out, dataset, steps=STEPS))


def _interrupt_at(step_to_stop: int, signum=signal.SIGINT):
  def on_step(step, _):
    if step == step_to_stop:
      os.kill(os.getpid(), signum)
  return on_step


@pytest.mark.slow
@pytest.mark.parametrize('stop, signum, status', [(STEPS // 2, signal.SIGINT, 130),
                                                  (1, signal.SIGTERM, 143)])
def test_resume_after_signal_is_exact(straight, dataset, tmp_path, stop, signum, status):
  """N steps, a signal, a resume to 2N: parameters, optimizer state and the loss sequence equal
  the uninterrupted run's bit for bit."""
  c = smoke_config(tmp_path, dataset, steps=STEPS)
  with pytest.raises(train_run.Interrupted) as e:
    train_run.run(c, on_step=_interrupt_at(stop, signum))
  assert e.value.status == status and f'at step {stop}' in str(e.value)
  assert train_checkpoint.Checkpoints(tmp_path).steps() == [stop]
  resumed = train_run.run(smoke_config(tmp_path, dataset, steps=STEPS))
  assert resumed['losses'] == straight['losses']
  want, got = flat_params(straight['state']), flat_params(resumed['state'])
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  losses = [json.loads(x)['loss'] for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert losses == straight['losses']  # the log holds each step once


@pytest.mark.slow
def test_resume_from_a_named_step(straight, dataset, tmp_path):
  c = smoke_config(tmp_path, dataset, steps=STEPS, checkpoints=1)
  c.checkpoints.keep_last_n = -1
  train_run.run(c)
  c = smoke_config(tmp_path, dataset, steps=STEPS, checkpoints=1)
  c.resume = '2'
  again = train_run.run(c)
  assert again['losses'] == straight['losses']
  want, got = flat_params(straight['state']), flat_params(again['state'])
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _workers(tmp_path, cache, dataset, out, *extra):
  address = f'localhost:{free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', LTX_JAX_COMPILATION_CACHE=str(cache),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  args = [tmp_path / 'run', dataset, STEPS, out, address, 2]
  procs = [subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'train_worker.py'),
                             *map(str, args), str(i), *map(str, extra)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  results = [p.communicate(timeout=900) for p in procs]
  return [(p.returncode, text) for p, (text, _) in zip(procs, results)]


@pytest.fixture(scope='module')
def two_straight(tmp_path_factory, dataset, cache):
  """2N steps on two processes (the data axis split over them, one CPU device each)."""
  tmp = tmp_path_factory.mktemp('two')
  done = _workers(tmp, cache, dataset, tmp / 'two.npz')
  assert [rc for rc, _ in done] == [0, 0], done[0][1][-4000:]
  return np.load(tmp / 'two.npz')


@pytest.mark.slow
def test_two_processes_equal_one(straight, two_straight):
  """jax.distributed on localhost, gloo collectives: the one-process losses and parameters to
  1e-5."""
  got = two_straight
  assert int(got['processes']) == 2 and int(got['devices']) == 2
  np.testing.assert_allclose(got['losses'], straight['losses'], rtol=1e-5)
  want = flat_params(straight['state'])
  worst = max(rel_l2(got[k], want[k]) for k in want if np.linalg.norm(want[k]) > 0)
  print(f"two processes vs one: worst relative L2 over parameters and optimizer state "
        f"{worst:.2e}")
  assert worst < 1e-5


@pytest.mark.slow
def test_two_processes_resume_exactly(two_straight, dataset, tmp_path, cache):
  """Two processes: SIGINT to process 0 after N steps stops both at that step (exit 130); a
  resume on two processes ends bit for bit where the uninterrupted two-process run ends."""
  stopped = _workers(tmp_path, cache, dataset, tmp_path / 'none.npz', STEPS // 2)
  assert [rc for rc, _ in stopped] == [130, 130], stopped[0][1][-3000:]
  assert train_checkpoint.Checkpoints(tmp_path / 'run').steps() == [STEPS // 2]
  done = _workers(tmp_path, cache, dataset, tmp_path / 'resumed.npz')
  assert [rc for rc, _ in done] == [0, 0], done[0][1][-3000:]
  got = np.load(tmp_path / 'resumed.npz')
  for k in two_straight.files:
    np.testing.assert_array_equal(got[k], two_straight[k], err_msg=k)


@pytest.fixture(scope='module')
def command_run(tmp_path_factory, cache):
  """The README's smoke command, as a user runs it."""
  out = tmp_path_factory.mktemp('command') / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu', LTX_JAX_COMPILATION_CACHE=str(cache))
  proc = subprocess.run(
      [sys.executable, '-m', 'ltx_jax.train', '--config', 'configs/train/smoke.py',
       f'--config.output_dir={out}'], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out


@pytest.mark.slow
def test_command_writes_checkpoints_videos_events_and_adapter(command_run):
  out = command_run
  steps = train_checkpoint.Checkpoints(out).steps()
  assert steps == [4, 8]  # every 4 steps, the last 2 kept
  for step in (0, 4, 8):
    videos = sorted((out / 'validation' / f'step_{step:06d}').glob('*.mp4'))
    assert len(videos) == 2 and all(v.stat().st_size > 0 for v in videos)
    assert (out / 'validation' / f'step_{step:06d}.png').is_file()
  from tbparse import SummaryReader
  scalars = SummaryReader(str(out / 'tensorboard')).scalars
  loss = scalars[scalars.tag == 'train/loss']
  assert sorted(loss.step) == list(range(1, 9)) and np.isfinite(loss.value).all()
  assert {'train/learning_rate', 'train/grad_norm', 'train/step_time_s',
          'train/samples_per_s', 'train/tokens_per_s'} <= set(scalars.tag)
  records = [json.loads(x) for x in (out / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == list(range(1, 9))
  card = (out / 'export' / 'README.md').read_text()
  assert 'LoRA rank 4' in card and 'Dataset index sha256' in card


@pytest.mark.slow
def test_exported_adapter_loads_in_diffusers(command_run):
  """diffusers' load_lora_weights on the export folder: every trained module gets its factors
  with alpha / r as PEFT's scaling."""
  import torch
  from diffusers import LTXVideoTransformer3DModel
  from diffusers.loaders import LTXVideoLoraLoaderMixin
  from safetensors.numpy import load_file
  from ltx_jax import smoke
  cfg = smoke.TRANSFORMER

  class Holder(LTXVideoLoraLoaderMixin):  # the pipeline, as far as LoRA loading reads it
    hf_device_map = None
    components = {}

    def __init__(self, transformer):
      self.transformer = transformer

  holder = Holder(LTXVideoTransformer3DModel(
      in_channels=cfg.in_channels, out_channels=cfg.out_channels,
      num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
      cross_attention_dim=cfg.cross_attention_dim, num_layers=cfg.num_layers,
      caption_channels=cfg.caption_channels))
  holder.load_lora_weights(str(command_run / 'export'), adapter_name='trained')
  tensors = load_file(command_run / 'export' / 'pytorch_lora_weights.safetensors')
  modules = dict(holder.transformer.named_modules())
  seen = 0
  for key, value in tensors.items():
    module, role = key[len('transformer.'):].rsplit('.lora_', 1)
    layer = modules[module]
    weight = getattr(layer, f'lora_{role[0]}')['trained'].weight.detach().numpy()
    np.testing.assert_array_equal(weight, value)
    assert layer.scaling['trained'] == 1.0  # alpha 4 / rank 4
    seen += 1
  assert seen == 2 * 4 * 2 * 2  # A and B x 4 attention targets x 2 attentions x 2 blocks
  assert torch.is_tensor(layer.lora_A['trained'].weight)


@pytest.mark.slow
def test_generate_takes_the_exported_adapter(command_run, tmp_path):
  """python -m ltx_jax.generate --config.loras=EXPORT (the CLI's run, in process): the video is
  made, and the merged adapter gives the trained model's output."""
  import jax
  import jax.numpy as jnp
  from ltx_jax import smoke
  from ltx_jax.cli import run as generate_run
  from test_cli_units import load_config
  adapter = command_run / 'export' / 'pytorch_lora_weights.safetensors'
  c = load_config('smoke')
  c.output_dir, c.loras, c.progress = str(tmp_path), str(adapter), False
  written = generate_run.run(c)
  assert written and written[0].stat().st_size > 0
  # The trained transformer from the last checkpoint against the merged file.
  merged = smoke.build_pipeline(loras=[str(adapter)]).transformer
  ck = train_checkpoint.Checkpoints(command_run)
  from ltx_jax.training import Trainer
  trained = smoke.build_pipeline().transformer
  trainer = Trainer(trained, train_run.train_config_of(load_train_config('smoke')))
  state, _ = ck.restore(ck.latest(), train_run._abstract(trainer.init_state()),
                        train_data.NoLoader())
  model = trainer.model_with(state)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, 12, smoke.LATENT)), jnp.float32)
  ctx = jnp.asarray(rng.standard_normal((1, 5, smoke.TEXT_DIM)), jnp.float32)
  t, mask = jnp.asarray([500.0]), jnp.ones((1, 5), jnp.float32)
  kw = dict(num_frames=3, height=2, width=2, rope_interpolation_scale=jnp.array([1., 32, 32]))
  with jax.default_matmul_precision('highest'):
    err = rel_l2(merged(x, ctx, t, mask, **kw), model(x, ctx, t, mask, **kw))
  print(f"merged exported adapter vs trained model: relative L2 {err:.2e}")
  assert err < 1e-5


# ------------------------------------------------------------------------------- refusals


def test_output_folder_of_another_run_is_refused(tmp_path):
  c = smoke_config(tmp_path)
  tmp_path.mkdir(exist_ok=True)
  other = smoke_config(tmp_path)
  other.optimization.learning_rate = 5e-3
  train_checkpoint.write_run_file(tmp_path, other)
  with pytest.raises(UsageError, match=r"holds another run: optimization.learning_rate: "
                                       r"0.005 -> 0.001"):
    train_run.run(c)
  c.resume = 'never'
  with pytest.raises(UsageError, match="resume='never'"):
    train_run.run(c)


@pytest.mark.slow
def test_damaged_dataset_and_foreign_latents_are_refused(dataset, tmp_path):
  import shutil
  for case in ('damaged', 'foreign'):
    folder = tmp_path / case
    shutil.copytree(dataset, folder)
    index = folder / 'index.json'
    if case == 'damaged':
      index.write_text(index.read_text()[:100])
      match = 'damaged index'
    else:
      data = json.loads(index.read_text())
      data['models']['vae']['weights_sha256'] = '0' * 64
      index.write_text(json.dumps(data))
      match = 'not by this'
    with pytest.raises(DataError, match=match):
      train_run.run(smoke_config(tmp_path / f'out_{case}', folder))


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

  class It:
    def get_state(self):
      return {'next_step': 1}

    def set_state(self, state):
      self.state = state

  ck = train_checkpoint.Checkpoints(tmp_path, keep_last_n=2)
  state = {'w': jnp.arange(4.0)}
  ck.save(1, state, It(), {})

  def full(*args, **kwargs):
    raise OSError(28, 'No space left on device', str(tmp_path / 'x'))

  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'async_save', full)
  with pytest.raises(DataError, match='No space left on device.*last good one is step 1'):
    ck.save(2, state, It(), {})
  assert ck.steps() == [1]
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['1']
  monkeypatch.undo()
  it = It()
  restored, meta = ck.restore(1, train_run._abstract(state), it)
  np.testing.assert_array_equal(restored['w'], np.arange(4.0))
  assert it.state == {'next_step': 1} and meta['step'] == 1


def test_bad_flag_is_one_line_exit_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'ltx_jax.train', '--config', 'configs/train/smoke.py',
       f'--config.output_dir={tmp_path}', '--config.lora.rank=0'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == 'error: config.lora.rank=0 must be an integer >= 1'


@pytest.mark.slow
def test_export_a_named_checkpoint(command_run):
  """--config.export.checkpoint=4: that checkpoint exported, no training."""
  c = load_train_config('smoke')
  c.output_dir, c.export.checkpoint = str(command_run), '4'
  result = train_run.run(c)
  assert result['step'] == 4 and result['checkpoints'] == [4, 8]
  facts = json.loads((command_run / 'export' / 'training.json').read_text())
  assert facts['steps'] == 4 and facts['lora']['rank'] == 4
  assert facts['base_model']['release'] == 'smoke' and len(facts['dataset_index_sha256']) == 64
  from ltx_jax.weights.safetensors_io import open_safetensors
  meta = open_safetensors(command_run / 'export' / 'pytorch_lora_weights.safetensors').metadata
  assert json.loads(meta['lora_adapter_metadata'])['transformer.r'] == 4
  assert json.loads(meta['ltx_jax_training'])['steps'] == 4
