"""The ``dicomweb`` kind of a recipe's ``source``, in its own module.

It imports the DICOMweb client code and builds the models of the server, its query and its
credentials: :func:`medflow.recipe.model.recipe_model` imports this module only for a recipe
whose source names ``dicomweb`` (see :class:`medflow.recipe.model.Deferred`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medflow.recipe.model import DicomSource, SeriesFilter, _Strict
from medflow.sources.dicomweb import DicomwebServer


class DicomwebSource(_Strict):
    """Studies on a DICOMweb server (PACS): QIDO-RS finds them, WADO-RS fetches them into the cache."""

    dicomweb: DicomwebServer = Field(description="The server (url, query, auth from the environment).")
    filter: SeriesFilter = Field(default_factory=SeriesFilter, description="What enters the dataset.")
    duplicates: Literal["first", "error"] = DicomSource.model_fields["duplicates"]
    mismatched_size: Literal["fail", "split"] = DicomSource.model_fields["mismatched_size"]
