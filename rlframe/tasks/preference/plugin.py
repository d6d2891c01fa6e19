"""Entry point of the preference example (pyproject: ``[project.entry-points."rlframe.plugins"]``).

Importing it registers the example's tasks (preference_synthetic, preference_synthetic_splits,
preference_images) and rewards (format, accuracy, score_consistency, profile_similarity). The core
imports it only by name, through the entry point.
"""
from rlframe.tasks.preference import task, vl_task  # noqa: F401  (registration happens on import)
