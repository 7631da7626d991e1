"""Weights holding NaN or Inf are refused while loading (one line naming the first such tensor),
before anything is generated, unless allow_nonfinite=True."""

import json
import shutil

import numpy as np
import pytest

from source_layouts import layouts
from ltx_jax.errors import LoadError
from ltx_jax.models.vae import load_vae
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.weights import open_safetensors, precision, write_safetensors


@pytest.fixture(scope='module')
def damaged(tmp_path_factory):
  """The tiny single-file layout with one VAE weight holding a NaN and an Inf."""
  single = layouts(tmp_path_factory.getbasetemp() / 'layouts')['single']
  folder = tmp_path_factory.mktemp('nonfinite')
  for f in single.iterdir():
    if f.suffix != '.safetensors':
      shutil.copy(f, folder / f.name)
  store = open_safetensors(single / 'ltxv-tiny.safetensors')
  tensors = {k: np.array(store.read(k)) for k in store.keys()}
  bad = 'vae.decoder.conv_in.conv.weight'
  tensors[bad].reshape(-1)[[3, 5]] = [np.nan, np.inf]
  write_safetensors(folder / 'ltxv-tiny.safetensors', tensors, store.metadata)
  return folder


def test_vae_refused_naming_the_tensor(damaged):
  path = damaged / 'ltxv-tiny.safetensors'
  with pytest.raises(LoadError, match=r'tensor decoder\.conv_in\.conv\.weight holds NaN or '
                                      r'Inf: .*allow_nonfinite') as e:
    load_vae(path)
  assert '\n' not in str(e.value) and str(path) in str(e.value)
  vae = load_vae(path, allow_nonfinite=True)
  assert np.isnan(np.asarray(vae.decoder.conv_in.kernel[...])).sum() == 1


def test_pipeline_refuses_before_generation(damaged):
  with pytest.raises(LoadError, match='allow_nonfinite'):
    LTXPipeline.from_pretrained(damaged, allow_custom=True)
  assert LTXPipeline.from_pretrained(damaged, allow_custom=True, allow_nonfinite=True)


@pytest.mark.parametrize('dtype', [np.float32, 'bfloat16', 'float8_e4m3fn', np.float16])
def test_first_nonfinite(dtype):
  import ml_dtypes
  dt = np.dtype(getattr(ml_dtypes, dtype) if isinstance(dtype, str) else dtype)
  x = np.zeros(1000, dt)
  assert precision.first_nonfinite(x) is None
  x[700] = np.nan
  assert precision.first_nonfinite(x) == 700
  assert precision.first_nonfinite(np.arange(5)) is None  # integers hold no NaN
