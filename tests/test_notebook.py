"""notebooks/quickstart.ipynb runs top to bottom (smoke model) and shows a video."""

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / 'notebooks' / 'quickstart.ipynb'


def test_quickstart_runs():
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  env_before = os.environ.get('JAX_PLATFORMS')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # the kernel inherits it
  try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': str(NOTEBOOK.parent)}}).execute()
  finally:
    if env_before is None:
      os.environ.pop('JAX_PLATFORMS', None)
  last = nb.cells[-1].outputs
  assert any('text/html' in o.get('data', {}) and '<video' in o['data']['text/html']
             for o in last), last
