"""Whole-model sources: where each component lives, and which release it is."""

from ltx_jax.sources.release import Evidence, Release, ReleaseError, detect
from ltx_jax.sources.resolve import (ModelSource, SourceError, fetch_from_hub,
                                     read_scheduler_config, resolve_source)

__all__ = ['Evidence', 'ModelSource', 'Release', 'ReleaseError', 'SourceError', 'detect',
           'fetch_from_hub', 'read_scheduler_config', 'resolve_source']
