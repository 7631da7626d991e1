"""Which LTX-Video release a set of weights is, from evidence rather than trust.

Evidence, strongest first:
  shapes     transformer layers x width: 28 x 2048 = 2B, 48 x 4096 = 13B (anything else is not
             a released model); the VAE generation: encoder with typed space-to-depth
             downsamplers (`compress_*_res`) = 0.9.5+, else a timestep-conditioned decoder =
             0.9.1, else 0.9.0; float8 tensors = an fp8 file.
  metadata   official files: `allowed_inference_steps` in the `config` metadata = distilled.
  names      released file / repo names (`ltxv-13b-0.9.7-dev-fp8`, `LTX-Video-0.9.5`, ...).
The releases matching all evidence must be exactly one; otherwise we refuse and say why, rather
than guess (0.9.5 and 0.9.6 dev share an architecture, for instance: only a name tells them
apart). Callers may name the release (`release='ltxv-2b-0.9.6-dev'`), which is checked against
the evidence, or, for tiny test models and home-made architectures, opt in to
`allow_custom=True`, which yields `Release('custom', 'custom', variant)`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from ltx_jax.errors import ReleaseError

# (version, size, variant) of every released transformer; fp8 files exist for FP8_RELEASES.
RELEASES = (
    ('0.9.0', '2b', 'dev'), ('0.9.1', '2b', 'dev'), ('0.9.5', '2b', 'dev'),
    ('0.9.6', '2b', 'dev'), ('0.9.6', '2b', 'distilled'),
    ('0.9.7', '13b', 'dev'), ('0.9.7', '13b', 'distilled'),
    ('0.9.8', '13b', 'dev'), ('0.9.8', '13b', 'distilled'), ('0.9.8', '2b', 'distilled'),
)
FP8_RELEASES = frozenset(r for r in RELEASES if r[0] in ('0.9.7', '0.9.8'))
SIZES = {(28, 2048): '2b', (48, 4096): '13b'}  # (layers, width)
VAE_GENERATIONS = {'0.9.0': ('0.9.0',), '0.9.1': ('0.9.1',),
                   '0.9.5+': ('0.9.5', '0.9.6', '0.9.7', '0.9.8')}


@dataclasses.dataclass(frozen=True)
class Release:
  version: str  # '0.9.0' .. '0.9.8', or 'custom'
  size: str  # '2b' | '13b' | 'custom'
  variant: str  # 'dev' | 'distilled'
  fp8: bool = False  # float8 transformer weights

  @property
  def custom(self) -> bool:
    return self.version == 'custom'

  @property
  def name(self) -> str:
    if self.custom:
      return f"custom-{self.variant}" + ('-fp8' if self.fp8 else '')
    return f"ltxv-{self.size}-{self.version}-{self.variant}" + ('-fp8' if self.fp8 else '')

  @classmethod
  def parse(cls, text: str) -> 'Release':
    """'ltxv-2b-0.9.6-distilled', '13b-0.9.8-dev-fp8', ... (size, version and variant named)."""
    hint = parse_hint(text)
    if text.startswith('custom'):
      return cls('custom', 'custom', hint.get('variant', 'dev'), hint.get('fp8', False))
    if not {'version', 'size', 'variant'} <= hint.keys():
      raise ReleaseError(f"release {text!r} must name size, version and variant, e.g. "
                         "'ltxv-2b-0.9.6-dev' or 'ltxv-13b-0.9.8-distilled'")
    release = cls(hint['version'], hint['size'], hint['variant'], hint.get('fp8', False))
    if (release.version, release.size, release.variant) not in RELEASES:
      raise ReleaseError(f"{release.name} was never released; known: {_names(RELEASES)}")
    return release


@dataclasses.dataclass(frozen=True)
class Evidence:
  """What the files say. None = no information (component absent, no such metadata)."""
  size: str | None = None  # '2b' | '13b' | 'custom' (unreleased shape)
  shape: str = ''  # human-readable transformer shape, for messages
  vae_generation: str | None = None  # a key of VAE_GENERATIONS
  distilled: bool | None = None  # official metadata says distilled
  fp8: bool | None = None
  hints: tuple[str, ...] = ()  # file / folder / repo names


def size_of(num_layers: int, dim: int) -> str:
  return SIZES.get((num_layers, dim), 'custom')


def vae_generation(encoder_block_names: Iterable[str], timestep_conditioning: bool) -> str:
  if any(n.endswith('_res') for n in encoder_block_names):
    return '0.9.5+'
  return '0.9.1' if timestep_conditioning else '0.9.0'


def parse_hint(text: str) -> dict:
  """Release facts a name states: {'version', 'size', 'variant', 'fp8'} (those present)."""
  text = text.lower()
  out: dict = {}
  m = re.search(r'(?<![\d.])v?0\.9(?:\.(\d))?(?![\d])', text)
  if m:
    out['version'] = f"0.9.{m.group(1) or 0}"
  m = re.search(r'(?<![\d.])(2|13)b(?![a-z\d])', text)
  if m:
    out['size'] = f"{m.group(1)}b"
  if 'distilled' in text:
    out['variant'] = 'distilled'
  elif re.search(r'(?<![a-z])dev(?![a-z])', text):
    out['variant'] = 'dev'
  if 'fp8' in text:
    out['fp8'] = True
  return out


def _names(releases) -> str:
  return ', '.join(f"ltxv-{s}-{v}-{d}" for v, s, d in sorted(releases))


def _hinted(hints: Iterable[str]) -> dict:
  facts: dict = {}
  for h in hints:
    for k, v in parse_hint(h).items():
      if facts.setdefault(k, v) != v:
        raise ReleaseError(f"the names {list(hints)} disagree about the {k} ({facts[k]} vs {v}); "
                           "pass release=... explicitly")
  return facts


def detect(ev: Evidence, *, release: str | Release | None = None,
           allow_custom: bool = False) -> Release:
  """The one release consistent with the evidence (see the module docstring), or ReleaseError."""
  fp8 = bool(ev.fp8)
  if release is not None:
    return _check_override(Release.parse(release) if isinstance(release, str) else release, ev)
  hint = _hinted(ev.hints)
  if ev.size == 'custom':
    if not allow_custom:
      raise ReleaseError(f"transformer shape {ev.shape} matches no LTX-Video release (2B: 28 "
                         "layers x 2048, 13B: 48 x 4096); pass allow_custom=True for a custom "
                         "or test model, or release=... to name one")
    variant = 'distilled' if ev.distilled else hint.get('variant', 'dev')
    return Release('custom', 'custom', variant, fp8)
  found = set(RELEASES)
  why = []
  if ev.size is not None:
    found = {r for r in found if r[1] == ev.size}
    why.append(f"{ev.size.upper()} transformer")
  if ev.vae_generation is not None:
    found = {r for r in found if r[0] in VAE_GENERATIONS[ev.vae_generation]}
    why.append(f"{ev.vae_generation} VAE")
  if ev.distilled:
    found = {r for r in found if r[2] == 'distilled'}
    why.append('distilled (allowed_inference_steps in metadata)')
  if fp8:
    found &= FP8_RELEASES
    why.append('fp8 weights')
  for k, i in (('version', 0), ('size', 1), ('variant', 2)):
    if k in hint:
      found = {r for r in found if r[i] == hint[k]}
      why.append(f"name says {hint[k]}")
  if not found:
    raise ReleaseError(f"no LTX-Video release has {', '.join(why) or 'these weights'}; pass "
                       "release=... if this is a release, or allow_custom=True for a custom model")
  if len(found) > 1:
    raise ReleaseError(f"cannot tell the release from {', '.join(why) or 'these files'}: it could "
                       f"be {_names(found)}; pass release=<one of them> (the released file names "
                       "also say it)")
  (version, size, variant), = found
  return Release(version, size, variant, fp8)


def _check_override(r: Release, ev: Evidence) -> Release:
  fp8 = bool(ev.fp8) if ev.fp8 is not None else r.fp8
  r = dataclasses.replace(r, fp8=fp8)
  if r.custom:
    return r
  problems = []
  if ev.size not in (None, 'custom') and ev.size != r.size:
    problems.append(f"the transformer is {ev.size.upper()}")
  if ev.vae_generation is not None and r.version not in VAE_GENERATIONS[ev.vae_generation]:
    problems.append(f"the VAE is a {ev.vae_generation} VAE")
  if ev.distilled and r.variant != 'distilled':
    problems.append("the metadata says distilled")
  if problems:
    raise ReleaseError(f"release={r.name} contradicts the files: {'; '.join(problems)}")
  return r
