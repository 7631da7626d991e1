"""Sources: `file=` inside a repo copy, and when a vae/ folder overrides a single file's VAE."""

import os

import pytest

from source_layouts import layouts
from ltx_jax.sources import resolve_source


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  return layouts(tmp_path_factory.getbasetemp() / 'layouts')


@pytest.fixture(scope='module')
def repo_copy(folders, tmp_path_factory):
  """A local copy of a hub repo: the diffusers folders and model_index.json at the root, plus
  the official single file beside them (as Lightricks/LTX-Video holds)."""
  root = tmp_path_factory.mktemp('repo_copy')
  for entry in folders['diffusers'].iterdir():
    (root / entry.name).symlink_to(entry)
  (root / 'ltxv-tiny.safetensors').symlink_to(folders['single'] / 'ltxv-tiny.safetensors')
  return root


def test_file_is_honoured_inside_a_repo_copy(repo_copy):
  ms = resolve_source(repo_copy, file='ltxv-tiny.safetensors', allow_custom=True)
  assert ms.kind == 'single_file'
  assert ms.transformer == repo_copy / 'ltxv-tiny.safetensors'
  # the root vae/ belongs to the repo's diffusers model, not to this file
  assert ms.vae == repo_copy / 'ltxv-tiny.safetensors' and not ms.vae_override
  assert resolve_source(repo_copy, allow_custom=True).kind == 'diffusers'  # no file: the root


def test_vae_override_only_on_purpose_and_reported(folders):
  over = resolve_source(folders['single_override'], allow_custom=True)
  assert over.vae == folders['single_override'] / 'vae' and over.vae_override
  plain = resolve_source(folders['single'], allow_custom=True)
  assert plain.vae.name == 'ltxv-tiny.safetensors' and not plain.vae_override


def test_hub_snapshot_never_overrides(folders, tmp_path):
  snap = tmp_path / 'models--a--b' / 'snapshots' / ('0' * 40)
  snap.mkdir(parents=True)
  for entry in folders['single_override'].iterdir():
    os.symlink(entry.resolve(), snap / entry.name)
  ms = resolve_source(snap, allow_custom=True)
  assert ms.vae.name == 'ltxv-tiny.safetensors' and not ms.vae_override
