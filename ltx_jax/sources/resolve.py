"""Finding a whole pipeline's weights from one path or hub id, by looking at what is there.

Recognised sources (`resolve_source(spec)`):
  diffusers   a folder with model_index.json and transformer/ vae/ text_encoder/ tokenizer/
              scheduler/ (Lightricks' diffusers repos)
  single_file a folder holding an official `ltxv-*.safetensors` (transformer + VAE), a T5 as a
              `.gguf` file or a `text_encoder/` folder, a tokenizer (`tokenizer/`, `spiece.model`,
              or the .gguf's vocabulary), optionally `vae/` (a diffusers VAE put there on purpose
              to override the file's: only in a folder that is not also a diffusers repo copy,
              and reported as `vae_override`) and `ltxv-spatial-upscaler-*.safetensors`; or the
              .safetensors file itself (its folder is searched). `file=` picks the single file
              even in a diffusers repo copy (the hub repos hold both: diffusers folders and the
              official single files at the root).
  orbax       a checkpoint written by tools/convert.py
  hub         `owner/name` (+ `file=` for a single file) fetched with huggingface_hub into its
              usual cache; offline, only what the cache holds
A `ModelSource` names where each component lives, in a form the component's loader accepts, and
the detected `Release` (see release.py). Nothing is loaded; only headers and configs are read.
The latent upsampler of the multi-scale recipe is optional: a diffusers `latent_upsampler/` folder
(LTXLatentUpsamplerModel) in the repo folder, or an official spatial upscaler file beside the
single file (the one of the release's version when there are several, else the newest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

from ltx_jax.errors import SourceError
from ltx_jax.models.transformer.config import TransformerConfig
from ltx_jax.models.upsampler.loading import DIFFUSERS_FOLDER as UPSAMPLER_FOLDER, diffusers_folder
from ltx_jax.models.vae.config import VAEConfig
from ltx_jax.sources.release import Evidence, Release, detect, size_of, vae_generation
from ltx_jax.weights import orbax_io
from ltx_jax.weights.values import in_file
from ltx_jax.weights.safetensors_io import CheckpointFormatError, official_config, open_safetensors

COMPONENTS = ('transformer', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'latent_upsampler')
OFFICIAL_TRANSFORMER = 'model.diffusion_model.'
SPATIAL_UPSCALER_GLOB = 'ltxv-spatial-upscaler-*.safetensors'
HUB_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')  # owner/name


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where each component of one LTX-Video model lives (None: not present)."""
  kind: str  # 'diffusers' | 'single_file' | 'orbax'
  root: Path
  release: Release
  transformer: Path | None = None
  vae: Path | None = None
  text_encoder: Path | None = None
  tokenizer: Path | None = None
  scheduler: Path | None = None  # a JSON file, the official file (metadata) or the manifest
  latent_upsampler: Path | None = None  # optional: a diffusers folder or an official file
  hub_repo: str | None = None
  vae_override: bool = False  # single_file: `vae` is a diffusers vae/ folder, not the file's VAE

  def require(self, *components: str) -> None:
    """SourceError naming every requested component this source lacks."""
    missing = [c for c in components if getattr(self, c) is None]
    if missing:
      raise SourceError(f"{self.root}: no {', '.join(missing)} in this {self.kind} source "
                        f"({_EXPECTED[self.kind]})")

  def files(self, components=COMPONENTS) -> list[Path]:
    """Every file the given components are read from (folders expanded), without repeats."""
    out: dict[Path, None] = {}
    for c in components:
      p = getattr(self, c)
      if p is None:
        continue
      for f in ([p] if p.is_file() else sorted(x for x in p.rglob('*') if x.is_file())):
        out.setdefault(f.resolve(), None)
    return list(out)


_EXPECTED = {
    'diffusers': 'expected transformer/, vae/, text_encoder/, tokenizer/ and scheduler/ folders',
    'single_file': 'expected an official ltxv-*.safetensors, a T5 .gguf file or text_encoder/ '
                   'folder, and a tokenizer/ folder or spiece.model',
    'orbax': 'convert the source again with --components naming it; generation needs '
             'transformer, vae and text_encoder: the default components',
}


def sha256(path: Path, chunk: int = 16 << 20) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def read_scheduler_config(source: ModelSource) -> dict | None:
  """{'format': 'diffusers' | 'official', 'config': {...}} or None when the source has none."""
  p = source.scheduler
  if p is None:
    return None
  with in_file(p):
    return _scheduler_config(p)


def _scheduler_config(p: Path) -> dict:
  if p.name == orbax_io.MANIFEST:
    return json.loads(p.read_text()).get('scheduler')
  if p.suffix == '.json':
    return {'format': 'diffusers', 'config': json.loads(p.read_text(encoding='utf-8'))}
  meta = official_config(open_safetensors(p))
  extra = {k: v for k, v in meta.items() if k not in ('transformer', 'vae', 'scheduler')}
  return {'format': 'official', 'config': dict(meta['scheduler'], **extra)}


# ------------------------------------------------------------------------------- resolution


def resolve_source(spec: str | os.PathLike, *, file: str | None = None,
                   release: str | Release | None = None, allow_custom: bool = False,
                   offline: bool | None = None, cache_dir: str | None = None,
                   also: tuple[str, ...] = ()) -> ModelSource:
  """A ModelSource for a local folder / file, a converted checkpoint or a hub repo id.

  file: which official .safetensors to use when a folder (or hub repo) holds several.
  release: name the release instead of detecting it (checked against the files).
  allow_custom: accept unreleased shapes (tiny test models) as release 'custom'.
  offline: hub only; True reads the local cache and never the network (default: the
    HF_HUB_OFFLINE environment variable decides).
  also: hub only; more files of the repo the run needs (e.g. the spatial upscaler), fetched
    with the rest and named in the hint when the hub cannot be reached.
  """
  path = Path(spec)
  if path.exists():
    with in_file(path):
      return _local(path, file=file, release=release, allow_custom=allow_custom, hints=())
  if HUB_ID.match(str(spec)):
    root = fetch_from_hub(str(spec), file, offline=offline, cache_dir=cache_dir, also=also)
    with in_file(root):
      ms = _local(root, file=file, release=release, allow_custom=allow_custom,
                  hints=(str(spec),), force_single=file is not None)
    return dataclasses.replace(ms, hub_repo=str(spec))
  raise SourceError(f"{spec}: no such file or folder (and not a hub repo id owner/name)")


def _local(path: Path, *, file, release, allow_custom, hints, force_single=False) -> ModelSource:
  if orbax_io.is_orbax(path):
    return _orbax(path, release)
  if path.is_file():
    if path.suffix != '.safetensors':
      raise SourceError(f"{path}: not a model source; pass an official .safetensors file, or a "
                        "folder (diffusers repo, single-file layout, converted checkpoint)")
    return _single_file(path.parent, path, release, allow_custom, hints)
  if not force_single and file is None and _is_diffusers_repo(path):
    return _diffusers(path, release, allow_custom, hints)
  chosen = path / file if file else None
  if chosen is not None and not chosen.is_file():
    raise SourceError(f"{chosen}: no such file")
  return _single_file(path, chosen, release, allow_custom, hints)


def is_whole_source_folder(path: Path) -> bool:
  """A diffusers repo folder or a converted checkpoint: read whole, no `file=` to choose."""
  return orbax_io.is_orbax(path) or _is_diffusers_repo(path)


def _is_diffusers_repo(path: Path) -> bool:
  return (path / 'model_index.json').is_file() or (path / 'transformer' / 'config.json').is_file()


def _orbax(path: Path, release) -> ModelSource:
  root, manifest = orbax_io.read_manifest(path)
  detected = Release(**manifest['release'])
  if release is not None:
    wanted = Release.parse(release) if isinstance(release, str) else release
    if (wanted.version, wanted.size, wanted.variant) != (
        detected.version, detected.size, detected.variant):
      raise SourceError(f"{root}: converted from {detected.name}, not {wanted.name}")
  comps = {c: root / c for c in manifest['components']}
  tok = root / 'tokenizer'
  return ModelSource('orbax', root, detected, comps.get('transformer'), comps.get('vae'),
                     comps.get('text_encoder'), tok if tok.is_dir() else None,
                     root / orbax_io.MANIFEST if manifest.get('scheduler') else None)


def _transformer_facts(cfg) -> dict:
  return dict(size=size_of(cfg.num_layers, cfg.dim),
              shape=f"{cfg.num_layers} layers x {cfg.dim}")


def _vae_facts(cfg) -> str:
  return vae_generation([b.name for b in cfg.encoder_blocks], cfg.timestep_conditioning)


def _diffusers_vae_config(folder: Path) -> VAEConfig:
  return VAEConfig.from_diffusers(json.loads((folder / 'config.json').read_text()))


def _has_fp8(store) -> bool:
  return any(store.dtype(k).name.startswith('float8') for k in store.keys())


def _diffusers(root: Path, release, allow_custom, hints) -> ModelSource:
  facts: dict = {}
  found = {c: root / c if (root / c).is_dir() else None for c in COMPONENTS[:-1]}
  if found['transformer'] is not None:
    cfg = TransformerConfig.from_diffusers(
        json.loads((root / 'transformer' / 'config.json').read_text()))
    facts.update(_transformer_facts(cfg), fp8=_has_fp8(open_safetensors(root / 'transformer')))
  if found['vae'] is not None and (root / 'vae' / 'config.json').is_file():
    facts['vae_generation'] = _vae_facts(_diffusers_vae_config(root / 'vae'))
  scheduler = root / 'scheduler' / 'scheduler_config.json'
  ev = Evidence(hints=tuple(hints) + (_hint_name(root),), **facts)
  upsampler = root / UPSAMPLER_FOLDER
  return ModelSource('diffusers', root, detect(ev, release=release, allow_custom=allow_custom),
                     found['transformer'], found['vae'], found['text_encoder'],
                     found['tokenizer'], scheduler if scheduler.is_file() else None,
                     upsampler if diffusers_folder(upsampler) == upsampler else None)


def _hint_name(root: Path) -> str:
  """A folder's name as a release hint; hub cache folders name their repo above snapshots/."""
  if root.parent.name == 'snapshots':
    return root.parent.parent.name.replace('models--', '').replace('--', '/')
  return root.name


def _official_files(root: Path) -> list[Path]:
  out = []
  for f in sorted(root.glob('*.safetensors')):
    store = open_safetensors(f)
    if any(k.startswith(OFFICIAL_TRANSFORMER) for k in store.keys()):
      out.append(f)
  return out


def _single_file(root: Path, chosen: Path | None, release, allow_custom, hints) -> ModelSource:
  if chosen is None:
    files = _official_files(root)
    if len(files) > 1:
      raise SourceError(f"{root}: several official checkpoints ({', '.join(f.name for f in files)})"
                        "; name one (file=... / --file)")
    if not files:
      raise SourceError(f"{root}: not a model source: no model_index.json (diffusers layout), no "
                        f"{orbax_io.MANIFEST} (converted checkpoint) and no official .safetensors "
                        "holding model.diffusion_model.* tensors")
    chosen = files[0]
  store = open_safetensors(chosen)
  try:
    meta = official_config(store)
  except CheckpointFormatError as e:
    raise SourceError(str(e)) from None
  facts: dict = {}
  transformer = None
  if 'transformer' in meta and any(k.startswith(OFFICIAL_TRANSFORMER) for k in store.keys()):
    transformer = chosen
    facts.update(_transformer_facts(TransformerConfig.from_official(meta['transformer'])),
                 fp8=_has_fp8(store.with_prefix(OFFICIAL_TRANSFORMER)))
  vae = None
  # A vae/ beside a single file overrides its VAE only where a user put it on purpose: a repo
  # copy or hub snapshot that also holds the diffusers folders keeps each file's own VAE.
  override = ((root / 'vae' / 'config.json').is_file() and not _is_diffusers_repo(root)
              and root.parent.name != 'snapshots')
  if override:
    vae = root / 'vae'
    facts['vae_generation'] = _vae_facts(_diffusers_vae_config(vae))
  elif 'vae' in meta and any(k.startswith('vae.') for k in store.keys()):
    vae = chosen
    facts['vae_generation'] = _vae_facts(VAEConfig.from_official(meta['vae']))
  if transformer is None and vae is None:
    raise SourceError(f"{chosen}: not an official LTX-Video single file: no "
                      f"{OFFICIAL_TRANSFORMER}* or vae.* tensors described by its 'config' "
                      "metadata")
  if 'allowed_inference_steps' in meta:
    facts['distilled'] = True
  ggufs = sorted(root.glob('*.gguf'))
  if (root / 'text_encoder').is_dir():
    text_encoder = root / 'text_encoder'
  elif len(ggufs) > 1:
    raise SourceError(f"{root}: several .gguf files ({', '.join(g.name for g in ggufs)}); keep "
                      "one T5 encoder next to the checkpoint")
  else:
    text_encoder = ggufs[0] if ggufs else None
  tokenizer = next((p for p in (root / 'tokenizer', root / 'spiece.model',
                                root / 'text_encoder' / 'spiece.model') if p.exists()),
                   text_encoder if text_encoder is not None and text_encoder.suffix == '.gguf'
                   else None)
  scheduler = chosen if 'scheduler' in meta else None
  ev = Evidence(hints=tuple(hints) + (chosen.stem,), **facts)
  detected = detect(ev, release=release, allow_custom=allow_custom)
  return ModelSource('single_file', root, detected, transformer, vae, text_encoder, tokenizer,
                     scheduler, _spatial_upscaler(root, detected.version),
                     vae_override=override)


def _spatial_upscaler(root: Path, version: str) -> Path | None:
  """The official spatial upscaler beside a single file: the one named for `version`, else the
  newest by name, else None."""
  files = sorted(root.glob(SPATIAL_UPSCALER_GLOB))
  return next((f for f in files if f.stem.endswith('-' + version)), files[-1] if files else None)


# ------------------------------------------------------------------------------------- hub


def hub_patterns(file: str | None = None, also: tuple[str, ...] = ()) -> list[str]:
  """The repo files a pipeline reads: with `file`, that official single file plus
  text_encoder/ and tokenizer/; without, the diffusers folders; then `also`."""
  patterns = ([file, 'text_encoder/*', 'tokenizer/*'] if file else
              ['model_index.json', 'transformer/*', 'vae/*', 'text_encoder/*', 'tokenizer/*',
               'scheduler/*', f'{UPSAMPLER_FOLDER}/*'])
  return patterns + [a for a in also if a not in patterns]


def fetch_from_hub(repo_id: str, file: str | None = None, *, offline: bool | None = None,
                   cache_dir: str | None = None, also: tuple[str, ...] = ()) -> Path:
  """Downloads (or finds in the cache) what a pipeline needs from a hub repo (`hub_patterns`);
  -> snapshot folder. When that fails, the message says how to download every one of those
  files elsewhere."""
  from huggingface_hub import constants, snapshot_download
  patterns = hub_patterns(file, also)
  local_only = constants.HF_HUB_OFFLINE if offline is None else offline
  try:
    folder = Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir,
                                    local_files_only=local_only))
  except Exception as e:  # the hub raises many types (HTTP, offline, cache miss, bad id)
    what = f"{repo_id}" + (f" ({file})" if file else '')
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise SourceError(
        f"cannot get {what} from the Hugging Face hub{' (offline)' if local_only else ''} and "
        f"it is not in the local cache {cache_dir or constants.HF_HUB_CACHE}: "
        f"{type(e).__name__}: {reason}. Download what the run needs where the hub is reachable "
        f"(huggingface-cli download {repo_id} --include "
        f"{' '.join(repr(p) for p in patterns)} --local-dir DIR) and pass that local "
        "folder DIR as the source") from None
  if file and not (folder / file).is_file():
    raise SourceError(f"{repo_id} has no file {file!r}")
  return folder
