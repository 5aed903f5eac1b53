"""Experiment configs: `base.py` (every field, documented), one file per LRA task, `quickstart.py`."""
