"""tools/bench/gpu_suite.py keeps working: its CPU mode (tiny sizes) runs every section end to
end, PyTorch references included, and writes the JSON and markdown with each section's numbers
(no timing assertions: shared CI machines)."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.bench import gpu_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_tiny_suite_writes_every_section(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  proc = subprocess.run([sys.executable, '-m', 'tools.bench.gpu_suite', '--cpu-tiny',
                         '--out-dir', str(tmp_path), '--budget-s', '3000'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / 'gpu_suite.json').read_text())
  md = (tmp_path / 'gpu_suite.md').read_text()
  assert result['mode'] == 'cpu-tiny' and list(result['sections']) == list(gpu_suite.SECTIONS)
  for name, sec in result['sections'].items():
    assert sec['status'] == 'ok', (name, sec.get('reason'), sec.get('traceback'))
    assert gpu_suite.TITLES[name] in md
    for row in sec['rows']:
      numbers = [v for v in row.values() if isinstance(v, (int, float))]
      assert numbers and all(math.isfinite(v) for v in numbers), (name, row)
  rows = {name: sec['rows'] for name, sec in result['sections'].items()}
  assert rows['e2e'][0]['diffusers_s'] > 0 and rows['e2e'][0]['ltx_jax_s'] > 0
  assert rows['multiscale'][0]['official_s'] > 0 and rows['multiscale'][0]['steps'] == '7 + 3'
  assert rows['fp8'][0]['fp8_gemm_rel_l2'] < 0.1  # emulated fp8 GEMMs off a GPU
  assert [r['cache'] for r in rows['step_cache']] == ['none', 'FirstBlockCache(0.05)']
  assert 'torch_step_s' in rows['train'][0] and 'not run' in rows['train'][1]['torch']
  assert rows['cold_start'][0]['cache_entries'] > 0
  assert rows['pytest_gpu'][0]['returncode'] == 0 and rows['pytest_gpu'][0]['skipped'] > 0


def test_sections_past_the_budget_are_skipped_with_the_reason(tmp_path, monkeypatch):
  # A first section that outlasts the whole budget: the next one must be skipped.
  monkeypatch.setitem(gpu_suite.RUNNERS, 'e2e', lambda sizes: time.sleep(1.5) or [])
  result = gpu_suite.run(gpu_suite.TINY, ['e2e', 'pytest_gpu'], tmp_path, budget_s=1.0,
                         command='x')
  sec = result['sections']['pytest_gpu']
  assert sec['status'] == 'skipped' and 'past the 1 s budget' in sec['reason']
  saved = json.loads((tmp_path / 'gpu_suite.json').read_text())
  assert saved['sections']['pytest_gpu']['status'] == 'skipped'
  assert 'skipped' in (tmp_path / 'gpu_suite.md').read_text()


def test_a_failing_section_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
  def boom(sizes):
    raise RuntimeError('planted failure')
  monkeypatch.setitem(gpu_suite.RUNNERS, 'e2e', boom)
  monkeypatch.setitem(gpu_suite.RUNNERS, 'fp8', lambda sizes: [{'case': 'stand-in', 'x': 1.0}])
  result = gpu_suite.run(gpu_suite.TINY, ['e2e', 'fp8'], tmp_path, budget_s=1000.0, command='x')
  assert result['sections']['e2e']['status'] == 'error'
  assert 'planted failure' in result['sections']['e2e']['reason']
  assert result['sections']['fp8']['rows'] == [{'case': 'stand-in', 'x': 1.0}]


def test_unknown_section_is_refused():
  from ltx_jax.errors import UsageError
  with pytest.raises(UsageError, match='nope'):
    gpu_suite.main(['--sections', 'e2e,nope'])
