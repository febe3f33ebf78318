"""Recipes: the pydantic model, YAML loading with positions, composition and diagnostics."""
