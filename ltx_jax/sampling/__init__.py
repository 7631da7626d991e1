"""Rectified-flow schedules and the scanned denoising loop."""

from ltx_jax.sampling.schedules import (DISTILLED_0_9_8_FIRST_PASS, DISTILLED_0_9_8_SECOND_PASS,
                                        SchedulerConfig, flow_match_sigmas,
                                        rectified_flow_sigmas, sigmas_for)
from ltx_jax.sampling.latent_ops import adain_filter_latent, first_pass_size, tone_map_latents
