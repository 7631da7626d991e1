"""LoRA adapters: read from every file layout in use, matched strictly to a model's parameters,
then merged into the weights while they load or kept beside them as runtime adapters.

Layouts (told apart by key suffix; any of the prefixes below, or none):
  diffusers / PEFT   `transformer.<module>.lora_A.weight` [r, in], `.lora_B.weight` [out, r]
                     (`.lora_B.bias` [out] with PEFT's lora_bias); alpha from the file's
                     `lora_adapter_metadata` JSON (`lora_alpha`, `alpha_pattern`, `use_rslora`,
                     prefixed `transformer.` by diffusers' pipeline saver; PEFT's default 8
                     when it names none), else alpha = r.
  official trainer / ComfyUI  `diffusion_model.<module>.lora_A / lora_B`, alpha = r.
  kohya / LyCORIS    `lora_down` / `lora_up` (also `lora.down` / `lora.up`) with `<module>.alpha`
                     scalars, else alpha = r whatever the `ss_network_alpha` metadata says (as
                     ComfyUI and diffusers load such files: neither reads it), modules also
                     written `lora_unet_<module with '_' for '.'>`; full differences `.diff`
                     (weight) and `.diff_b` (bias), as ComfyUI applies them.
Prefixes: `transformer.`, `diffusion_model.`, `model.diffusion_model.`, `base_model.model.`,
`lora_unet_` / `lora_transformer_` (flattened). Module names may follow either naming of the
checkpoints (diffusers' `proj_in`, `time_embed`, `norm_q` or the official `patchify_proj`,
`adaln_single`, `q_norm`): both resolve through the model's checkpoint name tables.

With W [out, in] in PyTorch's layout, adapter k of user scale s_k changes
  W    -> W + s_k * f * B @ A,  f = alpha / r (alpha / sqrt(r) with use_rslora)
  bias -> bias + s_k * f * b_B;   W -> W + s_k * diff;   bias -> bias + s_k * diff_b.
`merged` mode applies that in f32 to each weight as it is read (one weight in memory at a time),
then casts it to the storage dtype through `precision.cast` (range-checked, fp8 included).
`runtime` mode attaches `ltx_jax.nn.lora.LowRank` modules instead (factors only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import CheckpointFormatError, LoadError, UsageError
from ltx_jax.nn.layers import Dense
from ltx_jax.nn.lora import LowRank
from ltx_jax.weights import precision, values
from ltx_jax.weights.loader import Plan, Source, report_mismatch
from ltx_jax.weights.safetensors_io import open_safetensors

MODES = ('merged', 'runtime')

# key suffix -> role; longest first so '.lora_B.bias' is not read as something shorter
_ROLES = (
    ('.lora_linear_layer.down.weight', 'down'), ('.lora_linear_layer.up.weight', 'up'),
    ('.lora_A.weight', 'down'), ('.lora_B.weight', 'up'), ('.lora_B.bias', 'up_bias'),
    ('.lora_down.weight', 'down'), ('.lora_up.weight', 'up'),
    ('.lora.down.weight', 'down'), ('.lora.up.weight', 'up'),
    ('.diff_b', 'diff_b'), ('.alpha', 'alpha'), ('.diff', 'diff'),
)
_ADAPTER_NAMED = re.compile(r'(.+)\.lora_([AB])\.(?!weight$)[^.]+\.weight')
_UNSUPPORTED = {  # markers of adapter kinds that are not plain low-rank products
    'dora_scale': 'DoRA', 'lora_magnitude_vector': 'DoRA', 'lora_mid': 'LoCon (CP)',
    'hada_': 'LoHa', 'lokr_': 'LoKr', 'oft_': 'OFT', 'boft_': 'BOFT',
}
_PREFIXES = ('base_model.model.', 'model.diffusion_model.', 'diffusion_model.', 'transformer.')
_UNDERSCORED = ('lora_unet_', 'lora_transformer_')  # kohya-style flattened module names
_METADATA = 'lora_adapter_metadata'
PEFT_DEFAULT_ALPHA = 8  # peft.LoraConfig's lora_alpha when the metadata names none


@dataclasses.dataclass(frozen=True)
class Adapter:
  """One LoRA file as loaded: what the sidecar records."""
  name: str     # adapter_stem(file), made unique
  path: str
  sha256: str
  scale: float  # the scale it was loaded with
  # Modules of the file applied to the model (lora_strict=False may skip some or all: 0 means
  # the file changed nothing).
  modules_applied: int = -1


DIFFUSERS_WEIGHTS = 'pytorch_lora_weights'  # diffusers' LoRA file name in a saved folder


def parse_loras(loras: Any) -> tuple[tuple[Path, float], ...]:
  """`loras` as given by a user -> ((path, scale), ...). Accepts None, a path, (path, scale), or
  a sequence of those; refuses anything else, a missing file or a scale that is not finite."""
  if loras is None:
    return ()
  if isinstance(loras, (str, os.PathLike)) or (
      isinstance(loras, tuple) and len(loras) == 2 and isinstance(loras[1], (int, float))
      and not isinstance(loras[1], bool)):
    loras = [loras]
  if not isinstance(loras, (list, tuple)):
    raise UsageError(f"loras={loras!r}; expected a path, (path, scale) or a list of those")
  out = []
  for item in loras:
    path, scale = (item, 1.0) if isinstance(item, (str, os.PathLike)) else (
        tuple(item) if isinstance(item, (list, tuple)) and len(item) == 2 else (None, None))
    if not isinstance(path, (str, os.PathLike)):
      raise UsageError(f"LoRA entry {item!r}; expected a path or (path, scale)")
    if (isinstance(scale, bool) or not isinstance(scale, (int, float, np.number))
        or not math.isfinite(scale)):
      raise UsageError(f"LoRA scale {scale!r} for {path}; expected a finite number")
    out.append((_lora_file(Path(path)), float(scale)))
  return tuple(out)


def _lora_file(path: Path) -> Path:
  """A .safetensors file, or a folder holding diffusers' pytorch_lora_weights.safetensors or a
  single .safetensors file."""
  if path.is_dir():
    files = sorted(path.glob('*.safetensors'))
    named = path / f'{DIFFUSERS_WEIGHTS}.safetensors'
    if named.is_file():
      return named
    if len(files) == 1:
      return files[0]
    raise FileNotFoundError(f"LoRA folder {str(path)!r} holds {len(files)} .safetensors files; "
                            "pass the file")
  if not path.is_file():
    raise FileNotFoundError(f"LoRA file {str(path)!r} does not exist (pass a .safetensors file)")
  return path


def adapter_stem(path: Path) -> str:
  """An adapter's name: the file's stem, or for diffusers' generic
  `pytorch_lora_weights.safetensors` the folder holding it (the name users gave it)."""
  return path.parent.name if path.stem == DIFFUSERS_WEIGHTS and path.parent.name else path.stem


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise UsageError(f"lora_mode={mode!r}; choose one of {', '.join(MODES)}")
  return mode


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 24), b''):
      h.update(block)
  return h.hexdigest()


def _pattern_value(patterns: dict, module: str):
  """PEFT's rule: the first pattern p with `(.*\\.)?(p)$` matching the module name."""
  for pattern, value in patterns.items():
    try:
      if re.match(rf'(.*\.)?({pattern})$', module):
        return value
    except re.error:
      if module == pattern or module.endswith('.' + pattern):
        return value
  return None


class LoraFile:
  """One LoRA safetensors file: its modules (normalised names -> {role: key}) and alphas.

  Only the header and metadata are read here; tensors are read when an update is made.
  """

  def __init__(self, path: Path, scale: float, name: str):
    self.path, self.scale, self.name = path, scale, name
    self.store = open_safetensors(path)
    self._config = self._peft_config(self.store.metadata)
    self.modules: dict[str, dict[str, str]] = {}
    self.underscored: dict[str, dict[str, str]] = {}  # lora_unet_ modules, resolved later
    for key in self.store.keys():
      for marker, kind in _UNSUPPORTED.items():
        if marker in key:
          raise CheckpointFormatError(f"{path}: {key} belongs to a {kind} adapter; only LoRA "
                                      "(low-rank A/B, down/up, diff) adapters are supported")
      named = _ADAPTER_NAMED.fullmatch(key)  # a PEFT model's raw state: lora_A.<adapter>.weight
      plain = f'{named[1]}.lora_{named[2]}.weight' if named else key
      for suffix, role in _ROLES:
        if plain.endswith(suffix):
          module = plain[:-len(suffix)]
          break
      else:
        raise CheckpointFormatError(
            f"{path}: {key} is no LoRA tensor (expected keys ending in "
            f"{', '.join(s for s, _ in _ROLES)})")
      table = self.modules
      for prefix in _PREFIXES:
        if module.startswith(prefix):
          module = module[len(prefix):]
          break
      else:
        for flat in _UNDERSCORED:
          if module.startswith(flat):
            module, table = module[len(flat):], self.underscored
            break
      entry = table.setdefault(module, {})
      if role in entry:
        raise CheckpointFormatError(f"{path}: module {module} has two {role} tensors "
                                    f"({entry[role]}, {key})")
      entry[role] = key
    for module, entry in {**self.modules, **self.underscored}.items():
      self._check_module(module, entry)

  @staticmethod
  def _peft_config(metadata: dict[str, str]) -> dict:
    raw = metadata.get(_METADATA)
    if not raw:
      return {}
    try:
      config = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
      raise CheckpointFormatError(f"unreadable {_METADATA} metadata ({e})") from None
    if not isinstance(config, dict):
      raise CheckpointFormatError(f"the {_METADATA} metadata is a {type(config).__name__}, "
                                  "not a JSON object")
    if any(k.startswith('transformer.') for k in config):  # a pipeline's save: per component
      config = {k[len('transformer.'):]: v for k, v in config.items()
                if k.startswith('transformer.')}
    if config.get('use_dora'):
      raise CheckpointFormatError("the adapter is DoRA (use_dora in its metadata); only LoRA "
                                  "adapters are supported")
    return config

  def _check_module(self, module: str, entry: dict[str, str]) -> None:
    shape = lambda role: self.store.shape(entry[role])
    if ('down' in entry) != ('up' in entry):
      have, need = ('down', 'up') if 'down' in entry else ('up', 'down')
      raise CheckpointFormatError(f"{self.path}: {entry[have]} has no matching {need} "
                                  "tensor")
    if 'down' not in entry and not {'diff', 'diff_b'} & set(entry):
      raise CheckpointFormatError(f"{self.path}: {', '.join(entry.values())}: no low-rank "
                                  "factors or differences for this module")
    for role, key in entry.items():
      if not jnp.issubdtype(self.store.dtype(key), jnp.floating):
        raise CheckpointFormatError(f"{self.path}: {key} is {self.store.dtype(key)}, not a "
                                    "float tensor")
    if 'down' in entry:
      down, up = shape('down'), shape('up')
      if len(down) != 2 or len(up) != 2 or down[0] != up[1] or down[0] == 0:
        raise CheckpointFormatError(
            f"{self.path}: {entry['down']} {list(down)} and {entry['up']} {list(up)} are no "
            "low-rank pair (expected down [r, in], up [out, r])")
      if 'up_bias' in entry and shape('up_bias') != (up[0],):
        raise CheckpointFormatError(f"{self.path}: {entry['up_bias']} {list(shape('up_bias'))}"
                                    f" should be [{up[0]}]")
    if 'alpha' in entry and int(np.prod(shape('alpha'))) != 1:
      raise CheckpointFormatError(f"{self.path}: {entry['alpha']} {list(shape('alpha'))} should "
                                  "hold one number")

  def resolve_underscored(self, names: Iterable[str]) -> None:
    """Turns `lora_unet_a_b_c` modules into dotted names, by the model's known module names."""
    by_flat = {n.replace('.', '_'): n for n in names}
    for flat, entry in self.underscored.items():
      module = by_flat.get(flat, _UNDERSCORED[0] + flat)  # unknown: reported as unmatched
      if module in self.modules:
        raise CheckpointFormatError(f"{self.path}: module {module} appears twice")
      self.modules[module] = entry
    self.underscored = {}

  def factor(self, module: str, rank: int) -> float:
    """alpha / r (or alpha / sqrt(r)) of one module."""
    entry, cfg = self.modules[module], self._config
    alpha = None
    if 'alpha' in entry:
      alpha = float(self.store.read(entry['alpha'], np.float32).reshape(()))
    elif cfg:  # a PEFT LoraConfig: its lora_alpha defaults to 8, as PEFT's does
      alpha = _pattern_value(cfg.get('alpha_pattern') or {}, module)
      alpha = cfg.get('lora_alpha', PEFT_DEFAULT_ALPHA) if alpha is None else alpha
    try:
      alpha = float(rank if alpha is None else alpha)
    except (TypeError, ValueError):
      alpha = float('nan')
    if not math.isfinite(alpha):
      raise CheckpointFormatError(f"{self.path}: the alpha of {module} is {alpha!r}; expected "
                                  "a finite number")
    return alpha / (math.sqrt(rank) if cfg.get('use_rslora') else rank)

  def read(self, key: str) -> np.ndarray:
    a = np.asarray(self.store.read(key, np.float32))
    precision.check_finite(a, name=key, where=f'LoRA {self.path}')
    return a


@dataclasses.dataclass(frozen=True)
class Update:
  """One module of one adapter file, applied to one slice of one of our parameters."""
  file: int      # which adapter
  module: str    # its normalised module name in that file
  index: int     # the slice of a stacked parameter (0 when not stacked)
  leaf: str      # 'weight' or 'bias' of the PyTorch module


def _torch_shape(var: nnx.Variable, src: Source) -> tuple[int, ...]:
  ours = tuple(var.get_value().shape[src.stack:])
  if not src.perm:
    return ours
  shape = [0] * len(ours)
  for j, p in enumerate(src.perm):
    shape[p] = ours[j]
  return tuple(shape)


@dataclasses.dataclass
class Adapters:
  """LoRA files matched to a model: `updates[path]` lists what changes our parameter `path`."""
  files: list[LoraFile]
  plan: Plan  # the name map the updates were matched through (our layouts)
  updates: dict[tuple, list[Update]]

  @property
  def records(self) -> tuple[Adapter, ...]:
    applied = [set() for _ in self.files]
    for updates in self.updates.values():
      for u in updates:
        applied[u.file].add(u.module)
    return tuple(Adapter(f.name, str(f.path), _sha256(f.path), f.scale, len(applied[i]))
                 for i, f in enumerate(self.files))

  def delta(self, path: tuple, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The f32 change of slice `index` of parameter `path`, in the PyTorch layout `shape`
    (None when no adapter touches it)."""
    todo = [u for u in self.updates.get(path, ()) if u.index == index]
    if not todo:
      return None
    out = np.zeros(shape, np.float32)
    for u in todo:
      f = self.files[u.file]
      s = f.scale
      entry = f.modules[u.module]
      if u.leaf == 'weight':
        if 'down' in entry:
          down, up = f.read(entry['down']), f.read(entry['up'])  # [r, in], [out, r]
          out += (s * f.factor(u.module, down.shape[0])) * (up @ down)
        if 'diff' in entry:
          out += s * f.read(entry['diff'])
      else:
        if 'up_bias' in entry:
          rank = f.store.shape(entry['down'])[0]
          out += (s * f.factor(u.module, rank)) * f.read(entry['up_bias'])
        if 'diff_b' in entry:
          out += s * f.read(entry['diff_b'])
    return out


def open_adapters(model: nnx.Module, plans: Sequence[Plan], loras: Any, *, strict: bool = True,
                  what: str = 'model') -> Adapters | None:
  """Opens the LoRA files of `loras` (`parse_loras`) and matches their modules to `model`'s
  parameters through `plans` (the checkpoint name maps the model's files may use; the first
  is the one updates are made in). Strict: every module must match a layer, every shape must
  fit; otherwise one LoadError lists them all (strict=False warns and skips them)."""
  given = parse_loras(loras)
  if not given:
    return None
  names, files = set(), []
  for path, scale in given:
    stem = adapter_stem(path)
    name, n = stem, 1
    while name in names:
      n += 1
      name = f'{stem}_{n}'
    names.add(name)
    with values.in_file(path):  # every error about the file names it
      files.append(LoraFile(path, scale, name))

  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  targets: dict[str, dict[str, tuple]] = {}  # module name -> {'weight'/'bias': (path, index)}
  for plan in plans:
    for path, src in plan.items():
      for index, key in enumerate(src.keys):
        module, _, leaf = key.rpartition('.')
        if leaf in ('weight', 'bias') and module:
          targets.setdefault(module, {})[leaf] = (path, index)
        elif leaf:  # a parameter of no layer (scale_shift_table): `.diff` on its full name
          targets.setdefault(key, {})['self'] = (path, index)
  main_plan = plans[0]

  unmatched, wrong, updates = [], [], {}
  for i, f in enumerate(files):
    f.resolve_underscored(targets)
    for module, entry in f.modules.items():
      leaves = targets.get(module)
      if leaves is not None and 'self' in leaves and set(entry) == {'diff'}:
        leaves = {'weight': leaves['self']}  # W + diff on a bare parameter
      if leaves is None or 'weight' not in leaves:
        unmatched.append(f"{f.path.name}: {', '.join(sorted(entry.values()))}")
        continue
      bad, todo = [], []
      for leaf, roles in (('weight', ('down', 'diff')), ('bias', ('up_bias', 'diff_b'))):
        used = [r for r in roles if r in entry]
        if not used:
          continue
        if leaf not in leaves:
          bad.append(f"{entry[used[0]]}: the layer {module} has no {leaf}")
          continue
        path, index = leaves[leaf]
        torch = _torch_shape(variables[path], main_plan[path])
        for role in used:
          got = tuple(f.store.shape(entry[role]))
          if role == 'down':  # down [r, in], up [out, r] against W [out, in]
            got = (f.store.shape(entry['up'])[0], got[1])
          if got != torch:
            keys = f"{entry['up']} @ {entry['down']}" if role == 'down' else entry[role]
            bad.append(f"{keys}: gives {list(got)}, the layer {module} has {list(torch)}")
        todo.append((path, Update(i, module, index, leaf)))
      if 'down' in entry:  # a bad alpha is refused now, not half way through loading
        f.factor(module, f.store.shape(entry['down'])[0])
      if bad:  # the whole module is reported (and skipped when not strict)
        wrong.extend(f"{f.path.name}: {b}" for b in bad)
        continue
      for path, update in todo:
        updates.setdefault(path, []).append(update)
  if unmatched or wrong:
    summary = mismatch_summary(unmatched, wrong)
    if strict:
      names = ', '.join(str(f.path) for f in files)
      raise LoadError(f"LoRA {names} for {what}: {summary} (pass lora_strict=False to skip "
                      "them with a warning)")
    warnings.warn(f"LoRA for {what}: skipped {summary}", stacklevel=3)
  return Adapters(files, main_plan, updates)


EXAMPLES = 3  # mismatches quoted in an error; the rest are counted
EXAMPLE_CHARS = 160


def mismatch_summary(unmatched: Sequence[str], wrong: Sequence[str]) -> str:
  """One bounded line for a LoRA that does not fit: the counts and a few examples (a LoRA
  for another model size mismatches every tensor: the count says it, examples show how)."""
  def examples(items: Sequence[str]) -> str:
    shown = [i if len(i) <= EXAMPLE_CHARS else i[:EXAMPLE_CHARS - 3] + '...'
             for i in items[:EXAMPLES]]
    more = f"; {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ''
    return f" (e.g. {'; '.join(shown)}{more})" if shown else ''
  parts = []
  if unmatched:
    parts.append(f"{len(unmatched)} modules match no layer{examples(unmatched)}")
  if wrong:
    parts.append(f"{len(wrong)} tensors do not fit{examples(wrong)}")
  hint = (": made for another model (size or release)?" if len(wrong) > EXAMPLES and
          not unmatched else '')
  return ' and '.join(parts) + hint


class MergedStore:
  """A TensorStore that adds the adapters to each weight as it is read (f32, then cast)."""

  def __init__(self, store, plan: Plan, adapters: Adapters):
    self.store = store
    self.adapters = adapters
    self._where = {}  # store key -> (our path, slice index)
    for path in adapters.updates:
      for index, key in enumerate(plan[path].keys):
        self._where[key] = (path, index)

  def keys(self):
    return self.store.keys()

  def shape(self, name: str) -> tuple[int, ...]:
    return self.store.shape(name)

  def read(self, name: str, dtype: Any = None) -> np.ndarray:
    if name not in self._where:
      return self.store.read(name, dtype)
    base = self.store.read(name, np.float32)  # [out, in] or [out]: a cast copy, or the
    if not base.flags.writeable:               # read-only map of an f32 file
      base = base.copy()
    delta = self.adapters.delta(*self._where[name], base.shape)
    if delta is not None:
      base += delta
    return precision.cast(base, dtype or self.store.dtype(name), name=name)


_set_slice = jax.jit(lambda w, s, i: jax.lax.dynamic_update_index_in_dim(w, s, i, 0),
                     donate_argnums=0)


def merge_loaded(model: nnx.Module, adapters: Adapters) -> None:
  """Merges the adapters into an already loaded model (a converted checkpoint restored by
  orbax), one slice at a time on the device: f32 sum, range-checked cast back."""
  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  for path, todo in adapters.updates.items():
    var, src = variables[path], adapters.plan[path]
    value = var.get_value()
    for index in sorted({u.index for u in todo}):
      torch = _torch_shape(var, src)
      delta = src.convert(adapters.delta(path, index, torch))  # our layout
      part = value[index] if src.stack else value
      merged = precision.cast(part.astype(np.float32) + delta, value.dtype,
                              name='.'.join(map(str, path)))
      value = _set_slice(value, merged, index) if src.stack else merged
    var.set_value(value)


def check_runtime(adapters: Adapters) -> None:
  """Refuses (before any weight loads) adapters that runtime mode cannot hold: changes to
  anything but Dense kernels, full differences, LoRA biases."""
  for path, todo in adapters.updates.items():
    if path[-1] != 'kernel':
      raise UsageError(f"lora_mode='runtime' adapts Dense kernels only; "
                       f"{'.'.join(map(str, path))} (bias / norm changes in "
                       f"{adapters.files[todo[0].file].path.name}) needs lora_mode='merged'")
    for u in todo:
      if {'diff', 'diff_b', 'up_bias'} & set(adapters.files[u.file].modules[u.module]):
        raise UsageError(f"lora_mode='runtime' adds low-rank products only; "
                         f"{adapters.files[u.file].path.name} module {u.module} holds "
                         "full differences or a LoRA bias: use lora_mode='merged'")


def attach_runtime(model: nnx.Module, adapters: Adapters, *, mesh=None, rules=None) -> None:
  """Puts `LowRank` modules on every Dense the adapters touch (factors in the kernel's storage
  dtype, fp8 kernels: bf16; scales f32 from the files' scales)."""
  check_runtime(adapters)
  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  names = [f.name for f in adapters.files]
  by_layer: dict[tuple, list[Update]] = {}
  for path, todo in adapters.updates.items():
    by_layer.setdefault(path[:-1], []).extend(todo)
  for layer_path, todo in by_layer.items():
    kernel = variables[layer_path + ('kernel',)]
    src = adapters.plan[layer_path + ('kernel',)]
    shape = kernel.get_value().shape  # [(L,) in, out]
    lead, (d_in, d_out) = shape[:src.stack], shape[src.stack:]
    ranks = {}
    for u in todo:
      f = adapters.files[u.file]
      ranks[u.file] = max(ranks.get(u.file, 0), f.store.shape(f.modules[u.module]['down'])[0])
    order = sorted(ranks)
    offsets = dict(zip(order, np.cumsum([0] + [ranks[k] for k in order])[:-1]))
    total = sum(ranks.values())
    a = np.zeros(lead + (d_in, total), np.float32)
    b = np.zeros(lead + (total, d_out), np.float32)
    for u in todo:
      f = adapters.files[u.file]
      entry = f.modules[u.module]
      down, up = f.read(entry['down']), f.read(entry['up'])  # [r, in], [out, r]
      r, o = down.shape[0], offsets[u.file]
      at = (u.index,) if src.stack else ()
      a[at + (slice(None), slice(o, o + r))] = down.T
      b[at + (slice(o, o + r), slice(None))] = up.T * f.factor(u.module, r)
    owner = [k for k in order for _ in range(ranks[k])]
    scale = np.broadcast_to(np.asarray([f.scale for f in adapters.files], np.float32),
                            lead + (len(names),))
    kaxes = tuple(kernel.get_metadata().get('out_sharding') or (None,) * len(shape))
    axes = {'a': kaxes[:-1] + (None,), 'b': kaxes[:-2] + (None, kaxes[-1]),
            'scale': kaxes[:-2] + (None,)}
    dtype = kernel.get_value().dtype
    dtype = jnp.bfloat16 if np.dtype(dtype) == precision.FP8 else dtype  # as fp8 models' rest
    layer = LowRank(a.astype(dtype), b.astype(dtype), np.array(scale), owner, names, axes)
    for var in (layer.a, layer.b, layer.scale):
      var.set_value(jax.device_put(var.get_value(),
                                   sharding_lib.variable_sharding(var, mesh, rules)))
    parent = model
    for part in layer_path:
      parent = parent[part] if isinstance(part, int) else getattr(parent, part)
    if not isinstance(parent, Dense):
      raise UsageError(f"lora_mode='runtime': {'.'.join(map(str, layer_path))} is no Dense "
                       "layer; use lora_mode='merged'")
    parent.lora = nnx.data(layer)  # Dense declares lora = None (static) until this


def apply_loras(model: nnx.Module, plans: Sequence[Plan], loras: Any, *, mode: str = 'merged',
                strict: bool = True, mesh=None, rules=None, what: str = 'model') -> None:
  """Adds LoRA adapters to an already loaded `model` (matched through `plans`): 'merged' into
  its weights on the device (a slice at a time), 'runtime' as `LowRank` modules. The model's
  `lora_adapters` lists them after any it had."""
  check_mode(mode)
  if mode == 'runtime' and any(isinstance(m, LowRank) for _, m in nnx.iter_graph(model)):
    raise UsageError("this model already has runtime LoRA adapters; load all adapters at once")
  adapters = open_adapters(model, plans, loras, strict=strict, what=what)
  if adapters is None:
    return
  if mode == 'merged':
    merge_loaded(model, adapters)
  else:
    attach_runtime(model, adapters, mesh=mesh, rules=rules)
  model.lora_adapters = tuple(getattr(model, 'lora_adapters', ())) + adapters.records
