"""What a run will read, from the files' headers and configs, before any weight loads.

`check(config)` resolves the model source (fetching hub files into the cache, nothing onto a
device), then refuses what the files' metadata already rules out: STG layers beyond the
transformer's depth, a multi-scale run without a latent upsampler, a source missing a component.
`dry_run(config)` is the report of `--config.dry_run=True`: the resolved config, every file the
run would read and the outputs it would write.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ltx_jax import presets
from ltx_jax.cli import config as config_lib
from ltx_jax.errors import UsageError

NEEDED = ('transformer', 'vae', 'text_encoder', 'tokenizer')


@dataclasses.dataclass(frozen=True)
class Facts:
  """What the files say about the run, before loading."""
  source: object | None  # ltx_jax.sources.ModelSource; None for the smoke model
  num_layers: int  # transformer layers (STG's skip_block_list indexes them)
  upsampler: Path | None  # the multi-scale recipe's latent upsampler (None: single pass)


def hub_upscaler(c) -> str | None:
  """The spatial upscaler file a hub source's multi-scale run fetches (the preset's)."""
  if not c.multi_scale or c.model.upsampler or c.preset not in presets.PRESETS:
    return None
  return presets.get(c.preset).upsampler


def resolve(c, *, offline: bool = False):
  """The ModelSource of config.model (None for 'smoke'); hub sources are fetched into the
  cache with every file the run reads (the upscaler of a multi-scale preset too); offline (or
  config.model.offline): from the cache only."""
  from ltx_jax.sources import resolve_source
  m = c.model
  if m.source == config_lib.SMOKE:
    return None
  upscaler = hub_upscaler(c)
  return resolve_source(os.path.expanduser(m.source), file=config_lib.model_file(c) or None,
                        release=m.release or None, allow_custom=m.allow_custom,
                        offline=True if m.offline or offline else None,
                        also=(upscaler,) if upscaler else ())


def transformer_layers(source) -> int:
  """The transformer's layer count from its config (no weights read)."""
  from ltx_jax.models.transformer import TransformerConfig
  from ltx_jax.models.transformer.loading import open_checkpoint
  from ltx_jax.weights import orbax_io
  if source is None:
    from ltx_jax import smoke
    return smoke.TRANSFORMER.num_layers
  if source.kind == 'orbax':
    return orbax_io.component_config(source.root, 'transformer', TransformerConfig).num_layers
  return open_checkpoint(source.transformer).config.num_layers


def upsampler_path(c, source) -> Path | None:
  """The latent upsampler a multi-scale run loads (None: single pass, or the smoke model's
  random one); a UsageError when there is none."""
  m = c.model
  if not c.multi_scale or (source is None and not m.upsampler):
    return None
  if m.upsampler:
    path = Path(os.path.expanduser(m.upsampler))
    if not path.exists():
      raise UsageError(f"config.model.upsampler={m.upsampler!r}: no such file or folder")
    return path
  if source.latent_upsampler is not None:
    return source.latent_upsampler
  name = hub_upscaler(c)
  if source.hub_repo and name and (source.root / name).is_file():
    return source.root / name
  raise UsageError("config.multi_scale=True needs a latent upsampler: none was found beside "
                   f"the model {m.source!r}; pass --config.model.upsampler=PATH "
                   "(ltxv-spatial-upscaler-*.safetensors) or --config.multi_scale=False")


def _skip_blocks(c) -> dict[str, list[int]]:
  """config key -> the STG layer indices it asks for (flattened)."""
  def flat(v) -> list[int]:
    if isinstance(v, (list, tuple)):
      return [i for x in v for i in flat(x)]
    return [v] if isinstance(v, int) and not isinstance(v, bool) else []

  if c.multi_scale:
    return {f'{p}.skip_block_list': flat(c[p].get('skip_block_list', ()))
            for p in ('first_pass', 'second_pass')}
  if c.guidance_timesteps and c.skip_block_schedule:
    return {'skip_block_schedule': flat(c.skip_block_schedule)}
  return {'skip_block_list': flat(c.skip_block_list)}


def check(c) -> Facts:
  """Refuses, before any weight loads, what the files' metadata rules out (a UsageError for a
  value to change, a SourceError for a source missing a component)."""
  source = resolve(c)
  if source is not None:
    source.require(*NEEDED)
  layers = transformer_layers(source)
  for key, blocks in _skip_blocks(c).items():
    beyond = sorted({b for b in blocks if b >= layers})
    if beyond:
      raise UsageError(f"config.{key} has layers {beyond}, beyond the model's {layers} "
                       f"transformer layers (0..{layers - 1}); the preset's STG layers are for "
                       "its own release: pass a preset of this model's size or set the key")
  return Facts(source, layers, upsampler_path(c, source))


def _file_entry(path: Path) -> dict:
  return {'path': str(path), 'bytes': path.stat().st_size if path.is_file() else None}


def _hub_not_cached(c) -> dict | None:
  """For a hub source the local cache lacks: what the run would fetch (a dry run downloads
  nothing); None when the source is local or cached."""
  from ltx_jax.errors import SourceError
  from ltx_jax.sources.resolve import HUB_ID, hub_patterns
  src = c.model.source
  if src == config_lib.SMOKE or Path(src).expanduser().exists() or not HUB_ID.match(src):
    return None
  try:
    resolve(c, offline=True)
    return None
  except SourceError:
    upscaler = hub_upscaler(c)
    return {'source': src, 'hub_repo': src, 'not_in_cache': True, 'would_fetch': hub_patterns(
        config_lib.model_file(c) or None, (upscaler,) if upscaler else ())}


def dry_run(c) -> str:
  """The report of --config.dry_run=True: every check of a real run, then the resolved config,
  the files it would read and the videos it would write, as JSON. Nothing loads, and nothing
  is downloaded: a hub source the cache lacks is reported with the files a run would fetch
  (and the checks that need its metadata are left to the run)."""
  plan = config_lib.check(c)
  remote = _hub_not_cached(c)
  facts = Facts(None, 0, None) if remote else check(c)
  source = facts.source
  files = [] if source is None else [_file_entry(f) for f in source.files(NEEDED + (
      'scheduler',))]
  if facts.upsampler is not None:
    ups = facts.upsampler
    files += [_file_entry(f) for f in (sorted(x for x in ups.rglob('*') if x.is_file())
                                       if ups.is_dir() else [ups])]
  media = [x.image if x.image is not None else x.video for x in config_lib.conditions(c)]
  inputs = list(dict.fromkeys(str(p) for p in (
      c.prompt_file, c.long_video.prompt_file, c.input_video, c.control_video, *media) if p))
  report = {
      'dry_run': 'nothing was loaded, compiled or written',
      'model': (remote if remote else
                {'source': 'smoke', 'note': 'random-weight plumbing model, no files'}
                if source is None else
                {'source': c.model.source, 'kind': source.kind, 'root': str(source.root),
                 'release': source.release.name, 'hub_repo': source.hub_repo,
                 'transformer_layers': facts.num_layers}),
      'files': files,
      'upsampler': str(facts.upsampler) if facts.upsampler else None,
      'loras': [{'path': p, 'scale': s} for p, s in config_lib.loras(c)],
      'inputs': inputs,
      'outputs': [str(p) for job in plan.jobs for p in job.paths(c)],
      'config': c.to_dict(),
  }
  return json.dumps(report, indent=1, default=str)
