"""Sources: dataset discovery (items and their files) and content fingerprints."""
