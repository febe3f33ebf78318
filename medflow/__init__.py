"""medflow: declarative, cached, reproducible DICOM-to-tensor dataset builds."""

__version__ = "0.1.0"
