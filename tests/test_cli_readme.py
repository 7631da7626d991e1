"""The README's commands, run as written against tiny checkpoints in each format (diffusers
folder, official single file + T5 folder, converted checkpoint), so that they cannot drift.

Every `python -m ltx_jax.generate` and `python tools/convert.py` command in the README's bash
blocks from "Command line" to "Performance" is run with the substitutions the README states
under "Command line" (model source, release=custom, 64x64, 9 frames, output folder; in-process,
through the same config-flag parser the command line uses): each generates from the diffusers
folder, and the commands naming a model folder (`/models/ltxv...`) are also checked against the
other formats by a dry run (sources, files, preflight checks). The conversions read the
single-file folder (what `/models/ltxv` holds in the README: the official files) and the
command that generates from a converted checkpoint runs in full.
"""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from builders import random_lora
from cli_sources import cli_sources
from ltx_jax import video_io
from ltx_jax.cli import preflight, run
from ltx_jax.compilation_cache import enable_compilation_cache
from ltx_jax.models.transformer import TransformerConfig

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ['python', '-m', 'ltx_jax.generate']
CONVERT = ['python', 'tools/convert.py']
SIZE = ['--config.height=64', '--config.width=64']
FRAMES = 9  # every command's frame count (1 stays 1)
# configs/long.py: two windows of 17 frames sharing one latent frame.
LONG = ['--config.num_frames=17', '--config.long_video.temporal_tile_size=16',
        '--config.long_video.temporal_overlap=8']


def readme_commands() -> list[tuple[str, list[str]]]:
  """(section, words) of every generate / convert command from "Command line" to
  "Performance" (but "Fine-tuning"), in order."""
  text = (ROOT / 'README.md').read_text()
  text = text[text.index('\n## Command line'):text.index('\n## Performance')]
  # Fine-tuning's commands (train, preprocess, and generate with a trained adapter) are run by
  # the training tests (tests/test_train_run.py, tests/test_train_ic_lora.py).
  text = text[:text.index('\n## Fine-tuning')] + text[text.index('\n## Supported checkpoints'):]
  out = []
  for head, body in re.findall(r'\n(##[^\n]*)(.*?)(?=\n##|\Z)', text, re.S):
    for block in re.findall(r'```bash\n(.*?)```', body, re.S):
      for line in block.replace('\\\n', ' ').splitlines():
        words = shlex.split(line, comments=True)
        if words[:3] == GENERATE or words[:2] == CONVERT:
          out.append((head.strip('# '), words))
  return out


def make_inputs(folder: Path, diffusers: Path) -> None:
  """The files the README's commands name, in the working folder."""
  from PIL import Image
  rng = np.random.default_rng(0)
  (folder / 'prompts.txt').write_text('a cat on a mat\n\n# skipped\na dog in the park\n')
  for name in ('first_frame.png', 'first.png', 'last.png'):
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), np.uint8)).save(folder / name)
  video_io.write_mp4(folder / 'clip.mp4', rng.integers(0, 255, (49, 64, 64, 3), np.uint8), 24.0)
  video_io.write_mp4(folder / 'input.mp4', rng.integers(0, 255, (121, 64, 64, 3), np.uint8), 24.0)
  config = TransformerConfig.from_diffusers(
      json.loads((diffusers / 'transformer' / 'config.json').read_text()))
  random_lora(folder / 'style.safetensors', config)


def generate(argv: list[str]):
  """What `python -m ltx_jax.generate ARGV` runs, in this process: the written videos (or the
  dry run's report)."""
  values = flags.FlagValues()
  argv = ['generate', *argv]
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  c = values['config'].value
  return preflight.dry_run(c) if c.dry_run else run.run(c)


def substituted(words: list[str], source: Path, models: Path, out: Path, fmt: str,
                upsampler: Path) -> list[str]:
  """The README's substitutions (README "Command line")."""
  def swap(w):
    return re.sub(r'/models/ltxv(-[\w-]+)?', lambda m: str(
        models / ('ltxv' + m.group(1)) if m.group(1) else source), w)
  argv = [swap(w) for w in words[len(GENERATE) if words[:3] == GENERATE else len(CONVERT):]]
  if words[:2] == CONVERT:
    return argv + ['--release', 'custom', '--no-progress']
  i = argv.index('--config')
  argv[i + 1] = str(ROOT / argv[i + 1])
  if 'configs/smoke.py' in argv[i + 1]:
    return argv + [f'--config.output_dir={out}']
  if not any(a.startswith('--config.model.source=') for a in argv):
    argv.append(f'--config.model.source={source}')
  frames = _frames(argv)
  placed = [int(n) for a in argv if a.startswith('--config.conditions=')
            for n in re.findall(r':(\d+)', a)]
  if 'long.py' in argv[i + 1]:
    argv += LONG
  elif not any(n >= FRAMES for n in placed):  # items placed later keep the command's length
    argv = [a for a in argv if not a.startswith('--config.num_frames=')]
    argv.append(f'--config.num_frames={1 if frames == 1 else FRAMES}')
  argv += ['--config.model.release=custom', *SIZE, f'--config.output_dir={out}']
  if fmt == 'single':
    argv.append('--config.model.file=')
  if fmt == 'converted' and not any(a.startswith('--config.model.upsampler=') for a in argv):
    argv.append(f'--config.model.upsampler={upsampler}')
  return argv


def _frames(argv: list[str]) -> int | None:
  given = [a.split('=', 1)[1] for a in argv if a.startswith('--config.num_frames=')]
  return int(given[-1]) if given else None


@pytest.mark.slow
def test_readme_commands(tmp_path_factory, monkeypatch):
  from tools import convert as convert_tool
  sources = cli_sources(tmp_path_factory.getbasetemp() / 'cli_sources')
  work = tmp_path_factory.mktemp('readme')
  models = work / 'models'
  models.mkdir()
  make_inputs(work, sources['diffusers'])
  monkeypatch.chdir(work)
  commands = readme_commands()
  assert len(commands) >= 12, commands
  # The conversions (from the single-file folder, as /models/ltxv holds the official files) and
  # the command that generates from one; then every other command against each format.
  checkpoints = [(s, w) for s, w in commands if s == 'Supported checkpoints']
  others = [(s, w) for s, w in commands if s != 'Supported checkpoints']
  assert any(w[:2] == CONVERT for _, w in checkpoints) and others
  runs = [('single', sources['single'], w) for _, w in checkpoints]
  formats = {'diffusers': sources['diffusers'], 'single': sources['single'],
             'converted': models / 'ltxv-orbax'}
  for fmt, source in formats.items():  # other formats: the commands that name the source
    runs += [(fmt, source, w) for _, w in others
             if fmt == 'diffusers' or any('/models/ltxv' in a for a in w)]
  # One process-wide compilation cache for the runs (commands of the same shapes share
  # programs, as a user's second run does); switched off again after.
  enable_compilation_cache(work / 'xla')
  try:
    for n, (fmt, source, words) in enumerate(runs):
      _run(n, fmt, source, words, work, models, sources, convert_tool)
  finally:
    enable_compilation_cache(None)


def _run(n, fmt, source, words, work, models, sources, convert_tool):
  out = work / 'outputs' / f'{n:02d}-{fmt}'
  argv = substituted(words, source, models, out, fmt, sources['upsampler'])
  if fmt != 'diffusers' and words[:2] != CONVERT and not any(
      '/models/ltxv-' in w for w in words):
    argv.append('--config.dry_run=True')  # other formats: sources and checks, no generation
  if words[:2] == CONVERT:
    assert convert_tool.main(argv) == 0, (fmt, words)
    return
  result = generate(argv)
  if isinstance(result, str):  # the dry run: nothing written
    report = json.loads(result)
    assert report['files'] and not out.exists(), (fmt, report)
    return
  assert result and all(p.is_file() for p in result), (fmt, words)
  frames = _frames(argv)
  if frames is not None:
    assert video_io.read_mp4_info(result[0])['frames'] == frames, (fmt, words)
