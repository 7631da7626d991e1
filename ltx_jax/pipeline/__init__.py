"""Generation pipelines."""

from ltx_jax.pipeline.pipeline import LTXPipeline, LTXPipelineOutput
