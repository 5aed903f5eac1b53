"""Experiment configs: `base.py` (every field, documented), `variants.py` (the model variants), one
file per task, `quickstart.py`."""
