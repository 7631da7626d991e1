"""Model sources: layouts recognised by their contents, release detection, hub errors offline."""

import json

import pytest

from source_layouts import fake_hub_cache, layouts
from ltx_jax.sources import (Evidence, Release, ReleaseError, SourceError, detect,
                             read_scheduler_config, resolve_source)
from ltx_jax.sources.release import parse_hint


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  return layouts(tmp_path_factory.getbasetemp() / 'layouts')


def test_layouts(folders):
  repo = folders['diffusers']
  ms = resolve_source(repo, allow_custom=True)
  assert (ms.kind, ms.transformer, ms.vae, ms.text_encoder, ms.tokenizer) == (
      'diffusers', repo / 'transformer', repo / 'vae', repo / 'text_encoder', repo / 'tokenizer')
  assert read_scheduler_config(ms)['config']['shift_terminal'] == 0.1
  assert ms.release == Release('custom', 'custom', 'dev')

  single = folders['single']
  for spec in (single, single / 'ltxv-tiny.safetensors'):
    ms = resolve_source(spec, allow_custom=True)
    assert (ms.kind, ms.transformer.name, ms.vae.name, ms.text_encoder.name, ms.tokenizer.name) == (
        'single_file', 'ltxv-tiny.safetensors', 'ltxv-tiny.safetensors', 't5-encoder-f32.gguf',
        'spiece.model')
    assert read_scheduler_config(ms)['config']['sampler'] == 'LinearQuadratic'

  over = folders['single_override']
  ms = resolve_source(over, allow_custom=True)
  assert (ms.vae, ms.text_encoder, ms.tokenizer) == (
      over / 'vae', over / 'text_encoder', over / 'tokenizer')


def test_unreleased_shapes_need_opt_in(folders):
  for name in ('diffusers', 'single'):
    with pytest.raises(ReleaseError, match='matches no LTX-Video release.*allow_custom=True'):
      resolve_source(folders[name])
  # Naming a release is an opt-in too, checked against the files: the tiny VAEs are 0.9.1-
  # (diffusers: timestep conditioning, strided) and 0.9.5-style (single: typed downsamplers).
  assert resolve_source(folders['diffusers'], release='ltxv-2b-0.9.1-dev').release.version == '0.9.1'
  with pytest.raises(ReleaseError, match='contradicts the files: the VAE is a 0.9.5'):
    resolve_source(folders['single'], release='ltxv-2b-0.9.1-dev')
  with pytest.raises(ReleaseError, match='was never released'):
    resolve_source(folders['single'], release='ltxv-13b-0.9.1-dev')


def test_missing_components(folders, tmp_path):
  (tmp_path / 'ltxv-tiny.safetensors').symlink_to(folders['single'] / 'ltxv-tiny.safetensors')
  ms = resolve_source(tmp_path, allow_custom=True)
  assert ms.text_encoder is None and ms.tokenizer is None
  with pytest.raises(SourceError, match='no text_encoder, tokenizer in this single_file source'):
    ms.require('transformer', 'vae', 'text_encoder', 'tokenizer')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SourceError, match='not a model source'):
    resolve_source(tmp_path / 'empty')
  with pytest.raises(SourceError, match='no such file or folder'):
    resolve_source(tmp_path / 'nowhere')


def test_hub_offline(folders, tmp_path):
  with pytest.raises(SourceError) as e:
    resolve_source('nobody/no-such-ltx-model', file='ltxv-2b-0.9.8-distilled.safetensors',
                   offline=True, cache_dir=str(tmp_path))
  msg = str(e.value)
  assert '\n' not in msg and 'nobody/no-such-ltx-model' in msg and 'local folder' in msg
  assert 'huggingface-cli download' in msg
  # A repo the cache holds resolves offline, and its repo name is a release hint.
  fake_hub_cache(tmp_path, 'someone/LTX-Video-tiny', folders['diffusers'])
  ms = resolve_source('someone/LTX-Video-tiny', offline=True, cache_dir=str(tmp_path),
                      allow_custom=True)
  assert ms.kind == 'diffusers' and ms.hub_repo == 'someone/LTX-Video-tiny'
  assert (ms.transformer / 'config.json').is_file()


@pytest.mark.parametrize('name, facts', [
    ('ltx-video-2b-v0.9.safetensors', dict(version='0.9.0', size='2b')),
    ('ltx-video-2b-v0.9.1.safetensors', dict(version='0.9.1', size='2b')),
    ('ltxv-2b-0.9.6-distilled-04-25.safetensors',
     dict(version='0.9.6', size='2b', variant='distilled')),
    ('ltxv-13b-0.9.7-dev-fp8.safetensors',
     dict(version='0.9.7', size='13b', variant='dev', fp8=True)),
    ('Lightricks/LTX-Video-0.9.5', dict(version='0.9.5')),
    ('Lightricks/LTX-Video', {}),
])
def test_name_hints(name, facts):
  assert parse_hint(name) == facts


def test_detection_rules():
  v091 = Evidence(size='2b', vae_generation='0.9.1')
  assert detect(v091) == Release('0.9.1', '2b', 'dev')
  assert detect(Evidence(size='2b', vae_generation='0.9.0')).version == '0.9.0'
  assert detect(Evidence(size='13b', vae_generation='0.9.5+', distilled=True, fp8=True,
                         hints=('ltxv-13b-0.9.8-distilled-fp8',))) == Release(
                             '0.9.8', '13b', 'distilled', True)
  # Same architecture, several releases: refuse and list them.
  with pytest.raises(ReleaseError, match='ltxv-2b-0.9.5-dev, ltxv-2b-0.9.6-dev'):
    detect(Evidence(size='2b', vae_generation='0.9.5+'))
  assert detect(Evidence(size='2b', vae_generation='0.9.5+', distilled=True,
                         hints=('ltxv-2b-0.9.8-distilled',))).version == '0.9.8'
  # Contradictions: a 13B transformer with a 0.9.1 VAE, a 0.9.0 name on a 0.9.1 VAE, fp8 0.9.1.
  for ev in (Evidence(size='13b', vae_generation='0.9.1'),
             Evidence(size='2b', vae_generation='0.9.1', hints=('ltx-video-2b-v0.9',)),
             Evidence(size='2b', vae_generation='0.9.1', fp8=True)):
    with pytest.raises(ReleaseError, match='no LTX-Video release has'):
      detect(ev)
  with pytest.raises(ReleaseError, match='disagree'):
    detect(Evidence(size='2b', hints=('ltxv-2b-0.9.6-dev', 'ltxv-2b-0.9.5-dev')))
  assert Release.parse('ltxv-13b-0.9.8-distilled-fp8').name == 'ltxv-13b-0.9.8-distilled-fp8'
  assert detect(Evidence(size='custom', distilled=True), allow_custom=True).name == (
      'custom-distilled')


def test_official_distilled_metadata(folders, tmp_path):
  from ltx_jax.weights import open_safetensors, write_safetensors
  src = open_safetensors(folders['single'] / 'ltxv-tiny.safetensors')
  meta = json.loads(src.metadata['config'])
  meta['allowed_inference_steps'] = [1.0, 0.9937, 0.9875]
  write_safetensors(tmp_path / 'ltxv-tiny.safetensors', {k: src.read(k) for k in src.keys()},
                    {'config': json.dumps(meta)})
  ms = resolve_source(tmp_path, allow_custom=True)
  assert ms.release.variant == 'distilled'
  assert read_scheduler_config(ms)['config']['allowed_inference_steps'][0] == 1.0
  with pytest.raises(ReleaseError, match='the metadata says distilled'):
    resolve_source(tmp_path, release='ltxv-2b-0.9.6-dev')
