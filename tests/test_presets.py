"""Release presets (ltx_jax.presets): the CLI's configs and the README's table come from them,
and Python users can pass them to the pipeline."""

import re
from pathlib import Path

import pytest

from ltx_jax import presets, smoke
from ltx_jax.cli import config as config_lib
from ltx_jax.cli.config import pipeline_kwargs
from ltx_jax.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_generated_from_the_presets():
  readme = (ROOT / 'README.md').read_text()
  found = re.search(r'<!-- presets:begin -->\n(.*?)<!-- presets:end -->', readme, re.S)
  assert found, 'README.md lacks the <!-- presets:begin --> / <!-- presets:end --> markers'
  assert found.group(1) == presets.markdown_table(), (
      'README.md preset table is stale; paste ltx_jax.presets.markdown_table() between the '
      'markers')


@pytest.mark.parametrize('name', presets.names())
def test_cli_config_is_the_library_preset(name):
  c = config_lib.base_config(name)
  assert (c.model.source, c.model.file) == (presets.HUB_REPO, presets.get(name).file)
  kw = pipeline_kwargs(c)
  assert kw.pop('stochastic_sampling') is False
  assert kw == presets.sampling(name)


def test_python_users_pass_a_preset_to_the_pipeline():
  pipe = smoke.build_pipeline()
  kw = presets.sampling(presets.DEFAULT, height=64, width=64, num_frames=9,
                        max_sequence_length=16, progress=False)
  assert kw['timesteps'][0] == 1000.0 and len(kw['timesteps']) == 7 and kw['height'] == 64
  out = pipe(**kw, prompt='a cat sits on the mat', output_type='latent')
  assert out.latents.shape == (1, 2, 2, 2, smoke.LATENT)
  with pytest.raises(UsageError, match='heigth are no LTXPipeline.__call__ arguments'):
    presets.sampling(presets.DEFAULT, heigth=64)
  with pytest.raises(UsageError, match="unknown preset 'nope'; choose one of: ltxv-13b"):
    presets.sampling('nope')
  with pytest.raises(TypeError):
    presets.get(presets.DEFAULT).sampling['height'] = 1  # read-only: sampling() copies
