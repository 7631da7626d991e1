"""Generation pipelines: `LTXPipeline` and its stages' `GenerationPlan`."""

from ltx_jax.pipeline.conditioning import Condition
from ltx_jax.pipeline.pipeline import LTXPipeline, LTXPipelineOutput
from ltx_jax.pipeline.long_video import LTXLongVideoOutput, LTXLongVideoPipeline
from ltx_jax.pipeline.plan import GenerationPlan

__all__ = ['LTXPipeline', 'LTXPipelineOutput', 'GenerationPlan', 'Condition',
           'LTXLongVideoPipeline', 'LTXLongVideoOutput']
