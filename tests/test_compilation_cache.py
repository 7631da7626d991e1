"""The persistent compilation cache: where it goes, and the switch (env var and function).

Each check runs in a fresh process: the cache settings are process-global JAX config.
"""

import json
import os
import subprocess
import sys

_PROBE = """
import json, jax, jax.numpy as jnp
from ltx_jax import compilation_cache as cc
folder = cc.configure_compilation_cache()
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(json.dumps({'folder': None if folder is None else str(folder),
                  'enabled': jax.config.jax_enable_compilation_cache}))
"""


def _probe(tmp_path, value=None):
  env = {k: v for k, v in os.environ.items()
         if k not in ('LTX_JAX_COMPILATION_CACHE', 'JAX_COMPILATION_CACHE_DIR')}
  env.update(XDG_CACHE_HOME=str(tmp_path / 'xdg'), JAX_PLATFORMS='cpu')
  if value is not None:
    env['LTX_JAX_COMPILATION_CACHE'] = value
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_is_on_in_the_user_cache_folder(tmp_path):
  from ltx_jax.compilation_cache import cache_entries
  res = _probe(tmp_path)
  assert res == {'folder': str(tmp_path / 'xdg' / 'ltx_jax' / 'xla'), 'enabled': True}
  assert cache_entries(res['folder']) >= 1


def test_env_var_picks_a_folder_or_turns_it_off(tmp_path):
  from ltx_jax.compilation_cache import cache_entries
  res = _probe(tmp_path, str(tmp_path / 'mine'))
  assert res['folder'] == str(tmp_path / 'mine') and cache_entries(tmp_path / 'mine') >= 1
  res = _probe(tmp_path, '0')
  assert res == {'folder': None, 'enabled': False}
  assert cache_entries(tmp_path / 'xdg' / 'ltx_jax' / 'xla') == 0


def test_function_switch(tmp_path):
  code = f"""
import jax, jax.numpy as jnp
import ltx_jax
from ltx_jax.compilation_cache import cache_entries
assert ltx_jax.enable_compilation_cache({str(tmp_path / 'a')!r}) is not None
jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()
assert cache_entries({str(tmp_path / 'a')!r}) >= 1
assert ltx_jax.enable_compilation_cache(None) is None
assert not jax.config.jax_enable_compilation_cache
"""
  subprocess.run([sys.executable, '-c', code], check=True,
                 env=dict(os.environ, JAX_PLATFORMS='cpu'))
