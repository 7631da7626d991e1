"""The training config: the recipes hold the official trainer's values, and bad values are
refused with one line before anything loads."""

import importlib.util
from pathlib import Path

import pytest

from ltx_jax.cli import train_config
from ltx_jax.errors import UsageError

# Lightricks/LTX-Video-Trainer at 31b1273 (2025-10-26), configs/<file>: the values of every key
# the recipes carry, copied from the yaml files by hand (sections and names as there).
_VALIDATION_2B = {
    'prompts': ['a professional portrait video of a person with blurry bokeh background',
                'a video of a person wearing a nice suit'],
    'negative_prompt': 'worst quality, inconsistent motion, blurry, jittery, distorted',
    'images': None, 'video_dims': [768, 448, 89], 'seed': 42, 'inference_steps': 50,
    'videos_per_prompt': 1, 'guidance_scale': 3.5}
_LORA_ATTN = {'rank': 32, 'alpha': 32, 'dropout': 0.0,
              'target_modules': ['to_k', 'to_q', 'to_v', 'to_out.0']}
OFFICIAL = {
    'ltxv_2b_lora': ('configs/ltxv_2b_lora.yaml', {
        'model': {'model_source': 'LTXV_2B_0.9.6_DEV', 'training_mode': 'lora'},
        'lora': _LORA_ATTN,
        'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
        'optimization': {'learning_rate': 2e-4, 'steps': 1500, 'batch_size': 1,
                         'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                         'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                         'scheduler_params': {}, 'enable_gradient_checkpointing': False},
        'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': None},
        'data': {'num_dataloader_workers': 2},
        'validation': dict(_VALIDATION_2B, interval=100),
        'checkpoints': {'interval': 250, 'keep_last_n': -1},
        'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal',
                          'timestep_sampling_params': {}},
        'seed': 42, 'output_dir': 'outputs/ltxv_lora'}),
    'ltxv_2b_full': ('configs/ltxv_2b_full.yaml', {
        'model': {'model_source': 'LTXV_2B_0.9.6_DEV', 'training_mode': 'full'},
        'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
        'optimization': {'learning_rate': 1e-5, 'steps': 1000, 'batch_size': 1,
                         'gradient_accumulation_steps': 4, 'max_grad_norm': 1.0,
                         'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                         'scheduler_params': {}, 'enable_gradient_checkpointing': False},
        'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': None},
        'data': {'num_dataloader_workers': 2},
        'validation': dict(_VALIDATION_2B, interval=200),
        'checkpoints': {'interval': 500, 'keep_last_n': -1},
        'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal',
                          'timestep_sampling_params': {}},
        'seed': 42, 'output_dir': 'outputs/ltxv_full_finetune'}),
    'ltxv_2b_lora_low_vram': ('configs/ltxv_2b_lora_low_vram.yaml', {
        'model': {'model_source': 'LTXV_2B_0.9.6_DEV', 'training_mode': 'lora'},
        'lora': _LORA_ATTN,
        'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
        'optimization': {'learning_rate': 2e-4, 'steps': 1500, 'batch_size': 1,
                         'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                         'optimizer_type': 'adamw8bit', 'scheduler_type': 'linear',
                         'scheduler_params': {}, 'enable_gradient_checkpointing': True},
        'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': 'fp8-quanto'},
        'data': {'num_dataloader_workers': 2},
        'validation': dict(_VALIDATION_2B, interval=100),
        'checkpoints': {'interval': 250, 'keep_last_n': -1},
        'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal',
                          'timestep_sampling_params': {}},
        'seed': 42, 'output_dir': 'outputs/ltxv_lora'}),
    'ltxv_13b_lora': ('configs/ltxv_13b_lora_cakeify.yaml', {
        'model': {'model_source': 'LTXV_13B_097_DEV', 'training_mode': 'lora'},
        'lora': dict(_LORA_ATTN, rank=128, alpha=128),
        'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.5},
        'optimization': {'learning_rate': 2e-4, 'steps': 2000, 'batch_size': 1,
                         'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                         'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                         'scheduler_params': {}, 'enable_gradient_checkpointing': True},
        'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': None},
        'data': {'num_dataloader_workers': 2},
        'validation': {
            'prompts': [
                'CAKEIFY a person using a knife to cut a cake shaped like bottle of mouthwash',
                'CAKEIFY a person using a knife to cut a cake shaped like potted plant',
                'CAKEIFY a person using a knife to cut a cake shaped like a jar of Nutella'],
            'negative_prompt': 'worst quality, inconsistent motion, blurry, jittery, distorted',
            'video_dims': [576, 576, 121], 'seed': 42, 'inference_steps': 50,
            'interval': 250, 'videos_per_prompt': 1, 'guidance_scale': 3.5},
        'checkpoints': {'interval': 250, 'keep_last_n': -1},
        'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal',
                          'timestep_sampling_params': {}},
        'seed': 42, 'output_dir': 'outputs/cakeify_lora_13b'}),
    'ltxv_13b_ic_lora': ('configs/ltxv_13b_ic_lora.yaml', {
        'model': {'model_source': 'LTXV_13B_097_DEV', 'training_mode': 'lora'},
        'lora': dict(_LORA_ATTN, rank=128, alpha=128,
                     target_modules=['to_k', 'to_q', 'to_v', 'to_out.0', 'ff.net.0.proj',
                                     'ff.net.2']),
        'conditioning': {'mode': 'reference_video', 'first_frame_conditioning_p': 0.2,
                         'reference_latents_dir': 'reference_latents'},
        'optimization': {'learning_rate': 2e-4, 'steps': 2000, 'batch_size': 1,
                         'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                         'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                         'scheduler_params': {}, 'enable_gradient_checkpointing': True},
        'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': None},
        'data': {'num_dataloader_workers': 2},
        'validation': {
            'prompts': ['First validation prompt', 'Second validation prompt',
                        'Third validation prompt'],
            'reference_videos': ['/path/to/reference_a.mp4', '/path/to/reference_b.mp4',
                                 '/path/to/reference_c.mp4'],
            'negative_prompt': 'worst quality, inconsistent motion, blurry, jittery, distorted',
            'video_dims': [512, 512, 81], 'seed': 42, 'inference_steps': 50,
            'interval': 250, 'videos_per_prompt': 1, 'guidance_scale': 3.5},
        'checkpoints': {'interval': 250, 'keep_last_n': 3},
        'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal',
                          'timestep_sampling_params': {}},
        'seed': 42, 'output_dir': 'outputs/ic_lora_13b'}),
}


def _ours(value):
  """An official yaml value as the config holds it (lists as tuples, null as empty)."""
  if value is None:
    return ()
  if isinstance(value, list):
    return tuple(value)
  return value


def _compare(config, official, where):
  for key, want in official.items():
    if key == 'model_source':
      assert config.release == train_config.MODEL_SOURCES[want], where
      continue
    got = config[key]
    if isinstance(want, dict) and want:
      _compare(got, want, f"{where}.{key}")
    elif isinstance(want, dict):
      assert got.to_dict() == {}, f"{where}.{key}"
    elif key == 'quantization':
      assert got == (want or ''), f"{where}.{key}"
    else:
      assert got == _ours(want), f"{where}.{key}: {got!r} != {want!r}"


@pytest.mark.parametrize('recipe', sorted(OFFICIAL))
def test_recipe_values_equal_official_configs(recipe):
  file, official = OFFICIAL[recipe]
  assert train_config.RECIPES[recipe]['file'] == file
  _compare(train_config.base_config(recipe), official, recipe)


def test_every_recipe_has_official_values():
  assert set(train_config.RECIPES) == set(OFFICIAL)


def load_train_config(name: str, arg: str | None = None):
  path = Path(__file__).resolve().parents[1] / 'configs' / 'train' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'train_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _smoke(tmp_path, **values):
  c = load_train_config('smoke')
  c.output_dir = str(tmp_path / 'out')
  train_config.override(c, values)
  return c


def test_smoke_config_passes(tmp_path):
  plan = train_config.check(_smoke(tmp_path))
  assert plan.dataset is None and plan.resume == 'latest' and plan.release == 'smoke'


@pytest.mark.parametrize('values, words', [
    ({'model': {'training_mode': 'partial'}}, 'config.model.training_mode'),
    ({'lora': {'rank': 0}}, 'config.lora.rank=0'),
    ({'lora': {'target_modules': ('to_x',)}}, "'to_x'"),
    ({'optimization': {'learning_rate': -1.0}}, 'config.optimization.learning_rate'),
    ({'optimization': {'scheduler_type': 'exp'}}, 'config.optimization.scheduler_type'),
    ({'optimization': {'batch_size': 0}}, 'config.optimization.batch_size=0'),
    ({'conditioning': {'first_frame_conditioning_p': 1.5}}, 'first_frame_conditioning_p'),
    ({'flow_matching': {'timestep_sampling_mode': 'beta'}}, 'timestep_sampling_mode'),
    ({'validation': {'video_dims': (64, 64, 10)}}, 'num_frames=10'),
    ({'validation': {'images': ('a.png',)}}, '1 entries for 2 prompts'),
    ({'checkpoints': {'keep_last_n': 0}}, 'config.checkpoints.keep_last_n=0'),
    ({'resume': 'soon'}, "config.resume='soon'"),
    ({'export': {'formats': ('kohya',)}}, "'kohya'"),
    ({'mesh': {'data': 0}}, 'config.mesh'),
    ({'data': {'smoke_clips': 0}}, 'config.data.preprocessed_data_root is empty'),
    ({'data': {'preprocessed_data_root': '/no/such/folder'}}, "'/no/such/folder'"),
])
def test_bad_values_refused_in_one_line(tmp_path, values, words):
  with pytest.raises(UsageError) as e:
    train_config.check(_smoke(tmp_path, **values))
  assert words in str(e.value) and '\n' not in str(e.value)


def test_unknown_recipe_refused():
  with pytest.raises(UsageError, match='ltxv_2b_lora'):
    train_config.base_config('ltxv_7b')


def test_trajectory_differences_name_the_keys(tmp_path):
  a = _smoke(tmp_path)
  b = _smoke(tmp_path, optimization={'learning_rate': 2e-3}, validation={'interval': 2})
  diff = train_config.differences(train_config.trajectory(a), train_config.trajectory(b))
  assert diff == ['optimization.learning_rate: 0.001 -> 0.002']


@pytest.mark.parametrize('recipe', sorted(OFFICIAL))
def test_recipes_pass_the_checks_or_name_what_is_missing(recipe, tmp_path):
  c = load_train_config('ltxv', recipe)
  c.data.preprocessed_data_root = str(tmp_path)
  c.output_dir = str(tmp_path / 'out')
  if recipe == 'ltxv_2b_lora_low_vram':
    with pytest.raises(UsageError, match="optimizer_type=adamw$"):
      train_config.check(c)
  elif recipe == 'ltxv_13b_ic_lora':  # the recipe's placeholder validation references
    with pytest.raises(UsageError, match="reference_videos: '/path/to/reference_a.mp4' does not"):
      train_config.check(c)
    c.validation.interval = 0
    assert train_config.check(c).release == 'ltxv-13b-0.9.7-dev'
  else:
    plan = train_config.check(c)
    assert plan.release == train_config.MODEL_SOURCES[OFFICIAL[recipe][1]['model']['model_source']]
