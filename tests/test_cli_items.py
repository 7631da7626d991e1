"""The command line as a new user meets it (issue 30): the documented paths with tiny models in
the real formats, `--help`, the dry run, "did you mean", and one line (exit 2 usage, 1 data)
for what it refuses. Command-line behaviour is checked in subprocesses started together;
the rest in process, through the same functions the command line calls."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import random_lora
from cli_sources import LAYERS, cli_sources
from ltx_jax import checks, video_io
from ltx_jax.cli import config as config_lib
from ltx_jax.cli import help as help_lib
from ltx_jax.cli import preflight, run
from ltx_jax.errors import LoadError, SourceError, UsageError

ROOT = Path(__file__).resolve().parents[1]
T2V = str(ROOT / 'configs' / 't2v.py')
SMOKE = str(ROOT / 'configs' / 'smoke.py')


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  return cli_sources(tmp_path_factory.getbasetemp() / 'cli_sources')


def _start(*args, cwd=ROOT):
  return subprocess.Popen([sys.executable, '-m', 'ltx_jax.generate', *args], cwd=cwd,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _errors(err: str) -> list[str]:
  return [ln for ln in err.splitlines() if ln.startswith('error: ')]


def _config(preset: str, source, out: Path, **values):
  c = config_lib.base_config(preset)
  c.model.source, c.output_dir = str(source), str(out)
  config_lib.override(c, values)
  return c


@pytest.mark.slow
def test_command_line(sources, tmp_path):
  """Items 1, 2, 9, 10, 16 and --help / dry run / did-you-mean at the command line."""
  d = sources['diffusers']
  out = tmp_path / 'out'
  procs = {
      'help': _start('--config', T2V + ':ltxv-13b-0.9.8-dev', '--help'),
      'no config file': _start('--config', 'configs/nope.py'),
      'unknown preset': _start('--config', T2V + ':nope'),
      'misspelled key': _start('--config', T2V, '--config.num_frame=9'),
      'dry run': _start('--config', T2V, f'--config.model.source={d}',
                        '--config.model.allow_custom=True', '--config.dry_run=True',
                        f'--config.output_dir={out}/dry'),
      'custom model': _start('--config', T2V, f'--config.model.source={d}',
                             f'--config.output_dir={out}/custom'),
      'one frame': _start('--config', SMOKE, '--config.num_frames=1', '--config.save_png=True',
                          f'--config.output_dir={out}/image'),
      'negative seed': _start('--config', SMOKE, '--config.seeds=(-1,)',
                              f'--config.output_dir={out}'),
  }
  res = {k: p.communicate(timeout=600) + (p.returncode,) for k, p in procs.items()}

  text, err, rc = res['help']
  assert rc == 0 and not _errors(err), err
  assert "--config.num_frames" in text and "= 121" in text and "--config.model.allow_custom" in text
  assert "'ltxv-13b-0.9.8-dev.safetensors'" in text  # the preset's values, not the base ones

  for name, want in (('no config file', "no such config file 'configs/nope.py'; the configs are "
                                        "configs/control.py"),
                     ('unknown preset', "error: unknown preset 'nope'; choose one of"),
                     ('misspelled key', "unknown config key 'config.num_frame'; did you mean "
                                        "config.num_frames?"),
                     ('negative seed', 'config.seeds=(-1,) must be a non-empty tuple of '
                                       f'integers in [0, {checks.MAX_SEED}]')):
    _, err, rc = res[name]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith('error: '), (name, err)
    assert want in lines[0] and 'Traceback' not in err and 'ltx_jax.errors' not in err, (name, err)

  text, err, rc = res['dry run']  # item 1: a diffusers folder with a preset naming its file
  assert rc == 0, err
  report = json.loads(text)
  assert report['model']['kind'] == 'diffusers' and report['model']['transformer_layers'] == LAYERS
  assert report['config']['model']['file'] == 'ltxv-2b-0.9.8-distilled.safetensors'
  paths = {Path(f['path']).relative_to(d.resolve()).parts[0] for f in report['files']}
  assert paths == {'transformer', 'vae', 'text_encoder', 'tokenizer', 'scheduler',
                   'latent_upsampler'}, paths
  assert report['upsampler'] == str(d / 'latent_upsampler')
  assert report['outputs'][0].endswith('.mp4') and not (out / 'dry').exists()

  _, err, rc = res['custom model']  # item 2: the message names the flags that exist
  (line,) = _errors(err)
  assert rc == 1 and 'matches no LTX-Video release' in line, err
  assert '--config.model.allow_custom=True' in line and '--config.model.release=custom' in line
  assert not (out / 'custom').exists()

  _, err, rc = res['one frame']  # item 10: one frame is an image
  assert rc == 0, err
  (video,) = (out / 'image').glob('*.mp4')
  assert video_io.read_mp4_info(video)['frames'] == 1
  assert len(list((out / 'image').glob('*_frames/*.png'))) == 1


def test_model_file_of_a_preset(sources, tmp_path):
  """Item 1: the preset's model.file is dropped for a diffusers folder or converted checkpoint,
  kept for the hub, and a single-file folder without it names the escape."""
  d, single = sources['diffusers'], sources['single']
  c = _config('ltxv-13b-0.9.8-dev', d, tmp_path)
  assert config_lib.model_file(c) == '' and config_lib.check(c)
  c.model.file = 'mine.safetensors'  # a file the user names must be there
  with pytest.raises(UsageError, match=r"config.model.file='mine.safetensors' is not in"):
    config_lib.check(c)
  c = _config('ltxv-13b-0.9.8-dev', single, tmp_path)
  with pytest.raises(UsageError, match=r"\(the preset ltxv-13b-0.9.8-dev's file\) is not in .*"
                                       r"it holds ltxv-tiny.safetensors: pass "
                                       r"--config.model.file=NAME \(or --config.model.file= "):
    config_lib.check(c)
  c.model.file = ''
  c.model.release = 'custom'
  assert preflight.check(c).source.transformer.name == 'ltxv-tiny.safetensors'
  hub = config_lib.base_config('ltxv-13b-0.9.8-dev')
  assert config_lib.model_file(hub) == 'ltxv-13b-0.9.8-dev.safetensors'


def test_convert_names_its_own_flags(sources, tmp_path, capsys):
  """Item 2 for tools/convert.py: the release error names --allow-custom / --release."""
  from tools import convert as convert_tool
  out = tmp_path / 'ckpt'
  assert convert_tool.main(['--source', str(sources['diffusers']), '--out', str(out)]) == 1
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith('error: ') and 'matches no LTX-Video release' in line
  assert '--allow-custom' in line and '--release custom' in line and not out.exists()


def test_metadata_refusals_before_loading(sources, tmp_path, monkeypatch):
  """Item 6: STG layers beyond the model and a multi-scale run without an upsampler are usage
  errors from the files' metadata, before any weight loads; item 12: a source missing a
  component is refused then too."""
  from ltx_jax.pipeline import LTXPipeline
  monkeypatch.setattr(LTXPipeline, 'from_pretrained',
                      classmethod(lambda *a, **k: pytest.fail('weights loaded')))
  d = sources['diffusers']
  c = _config('ltxv-2b-0.9.8-distilled', d, tmp_path, multi_scale=False, stg_scale=1.0,
              skip_block_list=(3, LAYERS, 60))
  c.model.release = 'custom'
  with pytest.raises(UsageError, match=rf"config.skip_block_list has layers \[{LAYERS}, 60\], "
                                       rf"beyond the model's {LAYERS} transformer layers "
                                       rf"\(0..{LAYERS - 1}\)"):
    run.run(c)
  bare = tmp_path / 'bare'  # the diffusers folder without its latent_upsampler/
  bare.mkdir()
  for p in d.iterdir():
    if p.name != 'latent_upsampler':
      (bare / p.name).symlink_to(p)
  c = _config('ltxv-2b-0.9.8-distilled', bare, tmp_path)
  c.model.allow_custom = True
  with pytest.raises(UsageError, match='config.multi_scale=True needs a latent upsampler: none '
                                       'was found beside the model'):
    run.run(c)
  (bare / 'vae').unlink()  # a link to the shared folder
  c.model.upsampler = str(d / 'latent_upsampler')
  with pytest.raises(SourceError, match=r'no vae in this diffusers source'):
    run.run(c)
  assert not (tmp_path / 'out').exists()


def test_hub_hint_lists_every_file(tmp_path, monkeypatch):
  """Item 11: the hint downloads the file, the text encoder, the tokenizer and the upscaler."""
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.model.offline, c.output_dir = 'nobody/no-such-ltx', True, str(tmp_path)
  with pytest.raises(SourceError) as e:
    preflight.check(c)
  msg = str(e.value)
  assert ("huggingface-cli download nobody/no-such-ltx --include "
          "'ltxv-2b-0.9.8-distilled.safetensors' 'text_encoder/*' 'tokenizer/*' "
          "'ltxv-spatial-upscaler-0.9.8.safetensors' --local-dir DIR") in msg, msg
  c.multi_scale = False
  with pytest.raises(SourceError) as e:
    preflight.check(c)
  assert 'upscaler' not in str(e.value)


def test_dry_run_downloads_nothing(tmp_path):
  """A dry run of a hub source the cache lacks lists what a run would fetch."""
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.output_dir = 'nobody/no-such-ltx', str(tmp_path / 'out')
  report = json.loads(preflight.dry_run(c))
  assert report['model']['not_in_cache'] and report['model']['would_fetch'] == [
      'ltxv-2b-0.9.8-distilled.safetensors', 'text_encoder/*', 'tokenizer/*',
      'ltxv-spatial-upscaler-0.9.8.safetensors']
  assert report['files'] == [] and report['config']['model']['offline'] is False
  assert not (tmp_path / 'out').exists()


def test_video_to_video_configs(sources, tmp_path):
  """Item 13: video-to-video with a multi-scale preset says what to add; configs/v2v.py runs."""
  clip = tmp_path / 'input.mp4'
  video_io.write_mp4(clip, np.zeros((9, 64, 64, 3), np.uint8), 24.0)
  c = _config('ltxv-2b-0.9.8-distilled', sources['diffusers'], tmp_path, task='v2v',
              input_video=str(clip), denoise_strength=0.6, num_frames=9, height=64, width=64)
  with pytest.raises(UsageError, match=r"config.input_video \(video-to-video\) runs one pass, "
                                       r"and the preset 'ltxv-2b-0.9.8-distilled' is multi-scale: "
                                       r"add --config.multi_scale=False .*configs/v2v.py"):
    config_lib.check(c)
  v2v = help_lib.config_of(['generate', '--config', str(ROOT / 'configs' / 'v2v.py')])
  assert v2v.task == 'v2v' and not v2v.multi_scale
  v2v.update(dict(c.items()))
  v2v.multi_scale = False
  assert config_lib.check(v2v).jobs


def test_lora_for_another_model_is_one_short_line(sources, tmp_path):
  """Item 14: a LoRA made for another model size: counts and a few examples, bounded."""
  from ltx_jax.models.transformer import TransformerConfig, load_transformer
  other = TransformerConfig(num_layers=4, num_heads=4, head_dim=16, in_channels=8,
                            out_channels=8, cross_attention_dim=64, caption_channels=32)
  lora = random_lora(tmp_path / 'big.safetensors', other)
  with pytest.raises(LoadError) as e:
    load_transformer(sources['diffusers'], loras=lora)
  msg = str(e.value)
  assert '\n' not in msg and len(msg) < 1200, (len(msg), msg)
  assert 'tensors do not fit (e.g. ' in msg and 'more)' in msg and 'another model' in msg, msg


def test_lora_folder_names_and_frame_and_seed_rules(sources, tmp_path):
  """Item 16: a LoRA folder is named by the folder; Condition and Guide read frame -1 alike;
  seeds follow one rule in Python and on the command line."""
  from ltx_jax.models.transformer import TransformerConfig, load_transformer
  from ltx_jax.pipeline import conditioning, guides
  config = TransformerConfig.from_diffusers(json.loads(
      (sources['diffusers'] / 'transformer' / 'config.json').read_text()))
  for name in ('style_a', 'style_b'):
    (tmp_path / name).mkdir()
    random_lora(tmp_path / name / 'pytorch_lora_weights.safetensors', config, std=0.01)
  model = load_transformer(sources['diffusers'],
                           loras=[tmp_path / 'style_a', (tmp_path / 'style_b', 0.5)])
  assert [a.name for a in model.lora_adapters] == ['style_a', 'style_b']

  image = np.zeros((64, 64, 3), np.uint8)
  items = conditioning.resolve_frames([conditioning.Condition(image=image, frame_index=-1),
                                       conditioning.Condition(image=image, frame_index=-25)], 25)
  assert [i.frame_index for i in items] == [guides.resolve_frame(-1, 25),
                                            guides.resolve_frame(-25, 25)] == [24, 0]
  with pytest.raises(UsageError, match=r'frame_index=-26 is outside the 25-frame video '
                                       r'\(allowed: -25..24\)'):
    conditioning.resolve_frames([conditioning.Condition(image=image, frame_index=-26)], 25)
  png = tmp_path / 'last.png'
  from PIL import Image
  Image.fromarray(image).save(png)
  c = _config('ltxv-2b-0.9.8-distilled', sources['diffusers'], tmp_path / 'out',
              task='keyframes', conditions=(f'{png}:0', f'{png}:-1'), num_frames=25)
  assert config_lib.check(c).jobs

  for bad in (-1, checks.MAX_SEED + 1, True):
    with pytest.raises(UsageError, match=rf"seed={bad!r} must be an integer in \[0, "):
      checks.check_seed(bad)
    c.seeds = (bad,)
    with pytest.raises(UsageError, match=r'config.seeds=.* must be a non-empty tuple of '
                                         rf'integers in \[0, {checks.MAX_SEED}\]'):
      config_lib.check(c)
  assert checks.check_seed(checks.MAX_SEED) == checks.MAX_SEED


@pytest.mark.slow
def test_python_refuses_the_seeds_the_cli_refuses():
  """Item 16: LTXPipeline takes the CLI's seed rule (jax keys keep 32 bits: -1 and 2**32 would
  silently repeat other seeds)."""
  from ltx_jax import smoke
  pipe = smoke.build_pipeline()
  for bad in (-1, 2**32):
    with pytest.raises(UsageError, match=rf'seed={bad} must be an integer in \[0, 4294967295\]'):
      pipe.prepare(prompt='a cat', height=64, width=64, num_frames=9, seed=bad,
                   num_inference_steps=2)


def test_did_you_mean_and_help_units():
  c = config_lib.base_config()
  assert 'did you mean config.model.source?' in help_lib.unknown_key('model.sorce', c)
  assert 'did you mean config.model.source?' in help_lib.unknown_key('source', c)
  assert 'did you mean' not in help_lib.unknown_key('zzzzqqq', c)
  keys = help_lib.flat(c)
  assert keys['model.source'] == 'Lightricks/LTX-Video' and keys['dry_run'] is False
  assert keys['first_pass.timesteps'] and 'first_pass' not in keys


@pytest.mark.slow
def test_single_frame_matches_diffusers(sources, highest_precision):
  """Item 10: num_frames=1 (one latent frame; the causal VAE decodes it to one frame) as
  diffusers' LTXPipeline makes it."""
  import torch
  from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler
  from diffusers import LTXPipeline as Reference, LTXVideoTransformer3DModel
  from conftest import rel_l2
  from test_pipeline import check_frames, pack, text_inputs
  from ltx_jax.pipeline import LTXPipeline
  d = sources['diffusers']
  ref = Reference(scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(d / 'scheduler'),
                  vae=AutoencoderKLLTXVideo.from_pretrained(d / 'vae').eval(), text_encoder=None,
                  tokenizer=None,
                  transformer=LTXVideoTransformer3DModel.from_pretrained(d / 'transformer').eval())
  embeds, mask, neg, neg_mask = text_inputs(1)
  noise = torch.randn((1, 8, 1, 2, 2), generator=torch.Generator().manual_seed(0))
  common = dict(height=64, width=64, num_frames=1, frame_rate=25, num_inference_steps=3,
                guidance_scale=3.0, decode_timestep=0.05, decode_noise_scale=0.0)
  t = torch.from_numpy
  with torch.no_grad():
    want = ref(latents=noise.permute(0, 2, 3, 4, 1).reshape(1, -1, 8), output_type='np',
               prompt_embeds=t(embeds), prompt_attention_mask=t(mask),
               negative_prompt_embeds=t(neg), negative_prompt_attention_mask=t(neg_mask),
               **common).frames
  pipe = LTXPipeline.from_pretrained(d, allow_custom=True)
  out = pipe(latents=pack(noise), prompt_embeds=embeds, prompt_attention_mask=mask,
             negative_prompt_embeds=neg, negative_prompt_attention_mask=neg_mask,
             progress=False, **common)
  assert out.frames.shape == (1, 1, 64, 64, 3) and want.shape == (1, 1, 64, 64, 3)
  err = rel_l2(out.frames.astype(np.float64) / 255.0, want)
  print(f"single frame rel L2 {err:.2e}")
  check_frames(out.frames, want)
