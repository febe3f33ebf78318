"""The engine: plan (no pixel work), cache, per-item run, manifest, build orchestration."""
