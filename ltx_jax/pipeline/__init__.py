"""Generation pipelines."""

from ltx_jax.pipeline.conditioning import Condition
from ltx_jax.pipeline.pipeline import LTXPipeline, LTXPipelineOutput
