"""Training checkpoints: orbax's CheckpointManager over <output_dir>/checkpoints/<step>/.

One checkpoint holds four items, written together and published atomically (orbax writes into a
temporary folder and renames it when every item is complete):

  state    the train state's arrays (trainable parameters, optimizer state, step, random key),
           saved and restored with their shardings (every process writes its shards)
  loader   the data iterator's position, one JSON file per process (`LoaderState`)
  meta     JSON: step, the resolved config, the trajectory keys a resume must agree on, the
           dataset's index hash, the loss sequence so far
  (the manager's own metadata: which steps exist)

The run's output folder also holds run.json (the trajectory keys, written once at the start), so
a second run pointed at the same folder is recognised before anything loads: `check_resume`
resumes a matching run and refuses another one by name of the differing keys.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from ltx_jax.cli import train_config
from ltx_jax.errors import DataError, UsageError

RUN_FILE = 'run.json'
FOLDER = 'checkpoints'


# ------------------------------------------------------------------- the loader's iterator state


class LoaderStateHandler(ocp.CheckpointHandler):
  """Saves an iterator's `get_state()` (bytes, str or JSON data) as one JSON file per process
  and restores it with `set_state()` (grain iterators and ltx_jax.data's loader have both)."""

  def save(self, directory: epath.Path, args: 'LoaderSave'):
    state = args.item.get_state()
    kind = 'bytes' if isinstance(state, bytes) else 'json'
    text = state.decode() if isinstance(state, bytes) else state
    (directory / _process_file()).write_text(json.dumps({'kind': kind, 'state': text}))

  def restore(self, directory: epath.Path, args: 'LoaderRestore'):
    path = directory / _process_file()
    if not path.exists():
      raise DataError(f"checkpoint {directory.parent} has no loader state for this process "
                      f"({path.name}): it was written by another number of processes")
    data = json.loads(path.read_text())
    state = data['state'].encode() if data['kind'] == 'bytes' else data['state']
    args.item.set_state(state)
    return args.item

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


def _process_file() -> str:
  return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


@ocp.args.register_with_handler(LoaderStateHandler, for_save=True)
@dataclasses.dataclass
class LoaderSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(LoaderStateHandler, for_restore=True)
@dataclasses.dataclass
class LoaderRestore(ocp.args.CheckpointArgs):
  item: Any


# ---------------------------------------------------------------------------- the run folder


def write_run_file(output_dir: Path, c) -> None:
  """run.json: the trajectory keys of the run that owns this folder (process 0, once)."""
  path = output_dir / RUN_FILE
  if path.exists():
    return
  output_dir.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.tmp')
  tmp.write_text(json.dumps({'trajectory': train_config.trajectory(c),
                             'config': c.to_dict()}, indent=1, default=str))
  tmp.replace(path)


def check_resume(output_dir: Path, c, resume) -> None:
  """Refuses an output folder that holds another run (its trajectory keys differ), or any
  earlier run when resume is None ('never'); a UsageError naming the keys that differ."""
  path = output_dir / RUN_FILE
  if not path.exists():
    if (output_dir / FOLDER).exists() and any((output_dir / FOLDER).iterdir()):
      raise UsageError(f"{output_dir} holds checkpoints but no {RUN_FILE}: it is not a run "
                       "of this command; pass another --config.output_dir")
    return
  if resume is None:
    raise UsageError(f"config.output_dir={str(output_dir)!r} already holds a run and "
                     "config.resume='never'; pass another --config.output_dir or "
                     "--config.resume=latest")
  try:
    saved = json.loads(path.read_text())['trajectory']
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{path} is damaged ({type(e).__name__}); it names the run that owns "
                    f"{output_dir}") from None
  diff = train_config.differences(saved, train_config.trajectory(c))
  if diff:
    more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ''
    raise UsageError(f"config.output_dir={str(output_dir)!r} holds another run: {diff[0]}"
                     f"{more}; resume it with the same values or pass another "
                     "--config.output_dir")


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
  """The run's checkpoints: save every `interval` steps (and on demand), keep the last
  `keep_last_n` (-1: all), restore the latest or a named step."""

  def __init__(self, output_dir: Path, *, keep_last_n: int = -1):
    self.folder = Path(output_dir).absolute() / FOLDER
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if keep_last_n < 0 else keep_last_n, create=True,
        enable_async_checkpointing=False, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.folder, options=options, item_names=('state', 'loader', 'meta'),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'loader': LoaderStateHandler(), 'meta': ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, loader: Any, meta: dict) -> None:
    """Writes checkpoint `step` (every process calls it); a failure (a full disk) leaves no
    partial checkpoint and the earlier ones intact: a DataError naming the last good step."""
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), loader=LoaderSave(loader),
          meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)
      self.manager.wait_until_finished()
    except OSError as e:
      self._drop_partial(step)
      good = self.latest()
      raise DataError(f"cannot save checkpoint {step} in {self.folder}: "
                      f"{e.strerror or type(e).__name__} ({e.filename or 'write failed'}); "
                      f"{'no checkpoint kept' if good is None else f'the last good one is step {good}'}, "
                      "free space and resume") from None

  def _drop_partial(self, step: int) -> None:
    """Removes what a failed save of `step` left behind (temporary or final folder)."""
    if jax.process_index() != 0:
      return
    kept = {str(s) for s in self.manager.all_steps()}
    for path in self.folder.glob(f"{step}*"):  # the final folder or orbax's temporary one
      if path.name not in kept:
        shutil.rmtree(path, ignore_errors=True)
    self.manager.reload()

  def resolve(self, which) -> int | None:
    """'latest' -> the latest step (None without checkpoints); a step -> itself if kept."""
    steps = self.steps()
    if which == 'latest':
      return steps[-1] if steps else None
    if which not in steps:
      raise UsageError(f"no checkpoint of step {which} in {self.folder}; the kept steps are "
                       f"{steps or 'none'}")
    return which

  def drop_after(self, step: int) -> list[int]:
    """Deletes the checkpoints after `step` (a resume from an earlier step replaces them);
    returns their steps."""
    later = [s for s in self.steps() if s > step]
    for s in later:
      self.manager.delete(s)
    return later

  def restore(self, step: int, abstract_state: Any, loader: Any) -> tuple[Any, dict]:
    """(state, meta) of checkpoint `step`, the state placed as `abstract_state`'s shardings;
    the loader's position is set in place."""
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), loader=LoaderRestore(loader),
          meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError) as e:
      if isinstance(e, DataError):
        raise
      raise DataError(f"checkpoint {step} in {self.folder} does not fit this run: "
                      f"{' '.join(str(e).split())[:300]}") from None
    return out['state'], out['meta']

  def meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        'meta']

  def close(self) -> None:
    self.manager.close()
