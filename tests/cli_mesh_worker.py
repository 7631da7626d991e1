"""Runs the command line's generation (`ltx_jax.cli.run.run`) on the smoke model in a process
with 8 simulated CPU devices, on a data=2 x context=4 mesh with each context attention. Started
by tests/test_cli_mesh.py with XLA_FLAGS=--xla_force_host_platform_device_count=8 (the pytest
process has JAX on one device and makes the single-device run itself):

  python tests/cli_mesh_worker.py OUT_DIR

Writes OUT_DIR/result.json (per run: the mesh of the pipeline the CLI built, how many devices
its parameters live on, the sidecar's mesh) and OUT_DIR/RUN.npz (the PNG frames the CLI wrote
and the job's latents from the pipeline it built).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
ROOT = Path(__file__).resolve().parents[1]
RUNS = {'data2_context4_allgather': 'allgather', 'data2_context4_ring': 'ring'}


def smoke_config(out: Path, context_attention: str | None):
  spec = importlib.util.spec_from_file_location('smoke_config', ROOT / 'configs' / 'smoke.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.height, c.width, c.num_frames, c.num_inference_steps = 64, 64, 9, 2
  c.output_dir, c.save_png, c.progress = str(out), True, False
  if context_attention is not None:
    c.mesh.data, c.mesh.context, c.mesh.context_attention = 2, 4, context_attention
  return c


def run_cli(c) -> tuple[dict, 'np.ndarray', 'np.ndarray']:
  """-> (facts, PNG frames [F, H, W, 3], latents [1, F', H', W', C]) of one CLI run."""
  import numpy as np
  from PIL import Image
  from ltx_jax.cli import run
  built = {}
  (video,) = run.run(c, loaded=lambda pipe, source: built.update(pipe=pipe))
  pipe = built['pipe']
  pngs = sorted((video.parent / (video.stem + '_frames')).glob('*.png'))
  frames = np.stack([np.asarray(Image.open(p)) for p in pngs])
  # The same job's latents from the pipeline the CLI built (the CLI writes frames only).
  latents = pipe(prompt=c.prompt, seed=c.seeds[0], output_type='latent', progress=False,
                 **run.pipeline_kwargs(c)).latents
  sidecar = json.loads(video.with_suffix('.json').read_text())
  # The denoising loop the pipeline compiles for this job: its collectives show the mesh at work.
  from ltx_jax.sampling import loop as loop_lib
  plan = pipe.prepare(prompt=c.prompt, seed=c.seeds[0], progress=False, **{
      k: v for k, v in run.pipeline_kwargs(c).items()
      if k not in ('decode_timestep', 'decode_noise_scale')})
  graph, state = pipe._transformer_split
  args = pipe._global(plan.latents, plan.sigmas, plan.context, plan.context_mask, plan.guidance,
                      plan.coords, plan.cond_mask, plan.key)
  hlo = loop_lib.denoise_jit.lower(plan.spec, graph, state, *args).compile().as_text()
  p = pipe.partitioning
  facts = {
      'partitioning': None if p is None else {
          'mesh': {k: int(v) for k, v in p.mesh.shape.items()},
          'context_attention': p.context_attention},
      'param_devices': len(pipe.transformer.proj_in.kernel.get_value().sharding.device_set),
      'sidecar': {k: sidecar[k] for k in ('mesh', 'versions', 'devices')},
      'collectives': {op: hlo.count(f' {op}(') for op in ('all-gather', 'collective-permute',
                                                          'all-reduce', 'all-to-all')},
  }
  return facts, frames, latents


def main(out_dir: str):
  import jax
  import numpy as np
  result = {'device_count': jax.device_count(), 'runs': {}}
  for name, attention in RUNS.items():
    facts, frames, latents = run_cli(smoke_config(Path(out_dir) / name, attention))
    result['runs'][name] = facts
    np.savez(Path(out_dir) / f'{name}.npz', frames=frames, latents=latents)
  (Path(out_dir) / 'result.json').write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main(sys.argv[1])
