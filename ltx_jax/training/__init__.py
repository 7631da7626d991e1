"""Fine-tuning the LTX-Video transformer: LoRA or full, step for step as Lightricks'
LTX-Video-Trainer (standard strategy), in optax, on any mesh.

    from ltx_jax.training import LoraConfig, OptimizerConfig, TrainConfig, Trainer
    trainer = Trainer(model, TrainConfig(LoraConfig(rank=32, alpha=32), optimizer=
                                         OptimizerConfig(learning_rate=2e-4, steps=2000)))
    state = trainer.init_state()
    state, metrics = trainer.step(state, trainer.place(batch))
    save_lora(trainer, state, 'adapter.safetensors')
"""

from ltx_jax.training.objective import (FIRST_FRAME_MODES, Draws, ObjectiveConfig, draw,
                                        first_frame_mask, loss_fn, pack, video_coords)
from ltx_jax.training.optimizer import (SCHEDULES, OptimizerConfig, clip_by_global_norm_torch,
                                        make_optimizer, schedule)
from ltx_jax.training.samplers import SAMPLERS, SamplerConfig, logit_normal_shift, sample_sigmas
from ltx_jax.training.step import TrainConfig, Trainer, TrainState
from ltx_jax.training.trainable import (FullConfig, LoraConfig, Selection, Target, attach_lora,
                                        select_full, select_lora)

__all__ = ['FIRST_FRAME_MODES', 'Draws', 'ObjectiveConfig', 'draw', 'first_frame_mask',
           'loss_fn', 'pack', 'video_coords', 'SCHEDULES', 'OptimizerConfig',
           'clip_by_global_norm_torch', 'make_optimizer', 'schedule', 'SAMPLERS', 'SamplerConfig',
           'logit_normal_shift', 'sample_sigmas', 'TrainConfig', 'Trainer', 'TrainState',
           'FullConfig', 'LoraConfig', 'Selection', 'Target', 'attach_lora', 'select_full',
           'select_lora']
