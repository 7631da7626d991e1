"""Generation pipelines: `LTXPipeline`, its stages' `GenerationPlan`, and the two-pass
`LTXMultiScalePipeline`."""

from ltx_jax.pipeline.conditioning import Condition
from ltx_jax.pipeline.guides import Guide
from ltx_jax.pipeline.pipeline import LTXPipeline, LTXPipelineOutput
from ltx_jax.pipeline.long_video import LTXLongVideoOutput, LTXLongVideoPipeline
from ltx_jax.pipeline.plan import GenerationPlan
from ltx_jax.pipeline.multiscale import LTXMultiScalePipeline

__all__ = ['LTXPipeline', 'LTXMultiScalePipeline', 'LTXPipelineOutput', 'GenerationPlan',
           'Condition', 'Guide', 'LTXLongVideoPipeline', 'LTXLongVideoOutput']
