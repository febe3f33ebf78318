"""The de-identification configuration: profile, options, recipe rules, pixel and burned-in policy."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from medflow.deid.table import ALL_OPTIONS

BurnedInPolicy = Literal["quarantine", "fail", "allow"]
OptionName = Literal[
    "clean-pixel-data",
    "clean-recognizable-visual-features",
    "clean-graphics",
    "clean-structured-content",
    "clean-descriptors",
    "retain-longitudinal-full-dates",
    "retain-longitudinal-modified-dates",
    "retain-patient-characteristics",
    "retain-device-identity",
    "retain-institution-identity",
    "retain-uids",
    "retain-safe-private",
]


def _check_keyword(keyword: str) -> str:
    from pydicom.datadict import keyword_dict  # here: importing pydicom costs ~0.3 s of every recipe's load

    if keyword not in keyword_dict:
        close = difflib.get_close_matches(keyword, keyword_dict, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{keyword!r} is not a DICOM keyword in pydicom's dictionary{hint}")
    return keyword


class DeidRules(BaseModel):
    """Recipe-level overrides of the profile, by DICOM keyword (checked against the dictionary).

    ``keep`` retains attributes the profile would change (anywhere in the dataset, including
    inside sequences); ``replace`` sets an attribute to a fixed value wherever it occurs and
    adds it to the top-level dataset when absent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: tuple[str, ...] = ()
    replace: dict[str, str] = Field(default_factory=dict)

    @field_validator("keep")
    @classmethod
    def _keep_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_keyword(k) for k in value)

    @field_validator("replace")
    @classmethod
    def _replace_known(cls, value: dict[str, str]) -> dict[str, str]:
        for k in value:
            _check_keyword(k)
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> DeidRules:
        both = sorted(set(self.keep) & set(self.replace))
        if both:
            raise ValueError(f"attributes both kept and replaced: {', '.join(both)}")
        return self


class DeidConfig(BaseModel):
    """What to do: PS3.15 Annex E profile and options, overrides, pixels, burned-in policy.

    Attributes:
        profile: only ``basic`` (Basic Application Level Confidentiality Profile).
        options: Annex E option names, e.g. ``retain-longitudinal-modified-dates``.
        rules: recipe overrides (keep / replace by keyword).
        burned_in: what the caller does with an instance at risk of burned-in text.
        trust_burned_in_annotation: an instance whose BurnedInAnnotation (0028,0301) is NO is
            not at risk; ``False`` distrusts the flag (modality and SOP class decide).
        mask_regions: rectangles ``(x, y, w, h)`` in pixels (column, row, width, height) filled
            with 0 in every frame when clean-pixel-data or clean-recognizable-visual-features
            is on; only for uncompressed pixel data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Literal["basic"] = "basic"
    options: frozenset[OptionName] = frozenset()
    rules: DeidRules = Field(default_factory=DeidRules)
    burned_in: BurnedInPolicy = "quarantine"
    trust_burned_in_annotation: bool = True
    mask_regions: tuple[tuple[int, int, int, int], ...] = ()

    @field_validator("options", mode="before")
    @classmethod
    def _known_options(cls, value: object) -> frozenset[str]:
        if isinstance(value, str):
            raise ValueError("options is a list of option names, not one string")
        names = frozenset(value)  # type: ignore[arg-type]
        for name in sorted(names):
            if name not in ALL_OPTIONS:
                close = difflib.get_close_matches(name, ALL_OPTIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown de-identification option {name!r}{hint}")
        if {"retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"} <= names:
            raise ValueError(
                "retain-longitudinal-full-dates and retain-longitudinal-modified-dates exclude each other"
            )
        return names

    @field_serializer("options")
    def _sorted_options(self, options: frozenset[str]) -> list[str]:
        """Sorted, so that a dump (e.g. for a cache key) does not depend on set order."""
        return sorted(options)

    @field_validator("mask_regions")
    @classmethod
    def _regions(cls, value: tuple[tuple[int, int, int, int], ...]) -> tuple[tuple[int, int, int, int], ...]:
        for x, y, w, h in value:
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(f"mask region {(x, y, w, h)}: x, y must be >= 0 and w, h > 0 (pixels)")
        return value
