"""Steps: one module per family; importing this package registers them all.

To add a step family, write ``medflow/steps/<family>.py`` and add it to the import below.
"""

from medflow.steps import intensity, layout  # noqa: F401  (registration side effect)
