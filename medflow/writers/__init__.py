"""Writers: importing this package registers every output kind."""

from medflow.writers import tensors  # noqa: F401  (registration side effect)
