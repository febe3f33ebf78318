"""De-identification step: ``anonymize`` (DICOM PS3.15 Annex E Basic Profile with options, keyed).

The step de-identifies the item's headers (``Sample.headers``) with :mod:`medflow.deid` and
records the non-secret configuration in ``meta["deid"]``, so that the ``dicom`` writer can
de-identify the full original instances (pixel data included) the same way. The secret key is
read from an environment variable or a key file at run time; it never appears in the params,
the manifest or a cache key (only :func:`medflow.deid.key_id`, a keyed fingerprint, does).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

# The params model needs only these; the de-identification core (and pydicom, ~0.3 s to import)
# is imported when an item is de-identified, not when a recipe is validated.
from medflow.deid.config import BurnedInPolicy, DeidConfig, DeidRules, OptionName
from medflow.deid.errors import BurnedInTextError, DeidKeyError
from medflow.deid.keys import key_id, load_key
from medflow.deid.table import ALL_OPTIONS, edition
from medflow.errors import QuarantineItem, StepError
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register

STEP = "anonymize"
_CONFIGS: dict[int, tuple[AnonymizeParams, DeidConfig]] = {}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AnonymizeParams(StepParams):
    """De-identification per DICOM PS3.15 Annex E (Table E.1-1), keyed pseudonyms, burned-in policy."""

    step: Literal["anonymize"]
    profile: Literal["basic"] = Field(
        "basic", description="PS3.15 Annex E profile: 'basic' (Basic Application Level Confidentiality Profile)."
    )
    options: list[OptionName] = Field(
        default_factory=list,
        description=(
            "Annex E options (Table E.1-1 columns), composable, each recorded with its CID 7050 code in "
            "DeidentificationMethodCodeSequence (0012,0064); e.g. retain-longitudinal-modified-dates, "
            "retain-patient-characteristics, clean-descriptors."
        ),
    )
    rules: DeidRules = Field(
        default_factory=DeidRules,
        description="Overrides by DICOM keyword: keep (attributes the profile would change), replace (fixed values).",
    )
    burned_in: BurnedInPolicy = Field(
        "quarantine",
        description=(
            "Instances at risk of burned-in text (BurnedInAnnotation YES; US, SC, OT, secondary capture, "
            "encapsulated documents): 'quarantine' (the item is listed, nothing written), 'fail', 'allow'."
        ),
    )
    trust_burned_in_annotation: bool = Field(
        True,
        description=(
            "Honour BurnedInAnnotation (0028,0301) = NO per instance (written even on a risky modality). "
            "false: distrust the flag, the modality and SOP class decide."
        ),
    )
    mask_regions: list[tuple[int, int, int, int]] = Field(
        default_factory=list,
        description=(
            "Rectangles [x, y, w, h] in pixels (column, row, width, height) filled with 0 in every frame of "
            "the written DICOM when clean-pixel-data or clean-recognizable-visual-features is on "
            "(uncompressed pixel data only). The item's array (tensors) is not masked by this step."
        ),
        json_schema_extra={"unit": "pixels"},
    )
    key_env: str = Field(
        "MEDFLOW_DEID_KEY",
        description=(
            "NAME of the environment variable that holds the secret pseudonymization key (at least 16 bytes). "
            "The key itself is never written in a recipe: a recipe lives in git and its values reach the "
            "manifest and cache keys. Ignored when key_file is set."
        ),
    )
    key_file: str | None = Field(
        None,
        description=(
            "File holding the secret key (mode 0600; one trailing newline ignored). Absolute, or relative to "
            "the recipe's folder. Replaces key_env."
        ),
    )
    crosswalk: str | None = Field(
        None,
        description=(
            "CSV file for the table original PatientID -> pseudonym (identifying: written with mode 0600, and "
            "refused inside the output folder). Absolute, or relative to the recipe's folder. Off by default."
        ),
    )

    @field_validator("options", mode="before")
    @classmethod
    def _known_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("options is a list of option names, not one string")
        if not isinstance(value, list | tuple):
            return value  # pydantic's own type error names what was given
        for name in value:
            if isinstance(name, str) and name not in ALL_OPTIONS:
                close = difflib.get_close_matches(name, ALL_OPTIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown de-identification option {name!r}{hint}")
        return value

    @field_validator("key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            # never echo the value: it may be the key itself, interpolated by mistake
            raise ValueError("key_env must be the NAME of an environment variable (letters, digits, _), not a value")
        if value not in os.environ and value in os.environ.values():
            raise ValueError(
                "key_env holds the VALUE of an environment variable, not its name: write key_env: "
                "MEDFLOW_DEID_KEY, not ${MEDFLOW_DEID_KEY} (the key must stay out of the recipe)"
            )
        return value

    @field_validator("key_file", "crosswalk")
    @classmethod
    def _resolve_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        recipe_dir = (info.context or {}).get("recipe_dir") if info.context else None
        if value is not None:
            path = Path(value).expanduser()
            if recipe_dir is not None and not path.is_absolute():
                path = Path(recipe_dir) / path
            return str(path)
        return value

    @model_validator(mode="after")
    def _check(self) -> AnonymizeParams:
        if self.key_file is not None and "key_env" in self.model_fields_set:
            raise ValueError("give key_env or key_file, not both")
        self.config()  # the core's own checks (exclusive date options, mask regions)
        return self

    def config(self) -> DeidConfig:
        """The core's configuration (everything but the key and the crosswalk); both models are frozen,
        so it is made once per params object (each item of a run asks again)."""
        made = _CONFIGS.get(id(self))
        if made is not None and made[0] is self:
            return made[1]
        config = DeidConfig(
            profile=self.profile,
            options=frozenset(self.options),
            rules=self.rules,
            burned_in=self.burned_in,
            trust_burned_in_annotation=self.trust_burned_in_annotation,
            mask_regions=tuple(tuple(r) for r in self.mask_regions),
        )
        if len(_CONFIGS) >= 64:
            _CONFIGS.clear()
        _CONFIGS[id(self)] = (self, config)  # the params are kept: their id is not reused meanwhile
        return config

    def deidentifies(self) -> bool:
        # Tells the engine to keep input paths (often patient names or MRNs) out of the manifest.
        return True

    def slicewise(self) -> bool:
        # The burned-in decision and the recorded notes are per item, not per slice: a
        # streamed item would record them from its first slab only.
        return False

    def load_secret(self) -> bytes:
        """The de-identification key (checked by the engine before any file is read).

        Raises:
            DeidKeyError: unset, unreadable, or shorter than 16 bytes.
        """
        return load_key(**_load_args(self.key_source()))

    def key_source(self) -> dict[str, str]:
        """Where the key is (not secret): ``{"env": NAME}`` or ``{"file": absolute path}``."""
        return {"file": self.key_file} if self.key_file is not None else {"env": self.key_env}

    def canonical_params(self) -> dict[str, Any]:
        """The de-identification config plus ``key_id`` (keyed fingerprint), never the key or a path.

        A rotated key changes ``key_id`` and so recomputes; moving the key file does not.
        The crosswalk's location joins as a hash (its rows are part of the step's output).
        """
        params = self.config().model_dump(mode="json")
        try:
            params["key_id"] = key_id(load_key(**_load_args(self.key_source())))
        except DeidKeyError:
            params["key_id"] = "missing"  # the step then fails each item naming the variable / file
        if self.crosswalk is not None:
            location = str(Path(self.crosswalk).resolve())
            params["crosswalk"] = {
                "name": Path(location).name,
                "location_sha256": hashlib.sha256(location.encode("utf-8", "surrogateescape")).hexdigest()[:16],
            }
        return params


def _load_args(source: dict[str, str]) -> dict[str, str]:
    return {"key_file": source["file"]} if "file" in source else {"env_var": source["env"]}


# Pointwise in the engine's sense: pixel values pass through untouched, so the step can sit
# among the folded pointwise steps (it then sees every slice's header, as on the volume).
@register(STEP, 1, AnonymizeParams, pointwise=True, reads_pixels=False)
def anonymize(sample: Sample, params: AnonymizeParams) -> Sample:
    """De-identify the item's headers (PS3.15 Annex E Basic Profile + options) with a keyed pseudonymizer.

    Every slice header goes through :func:`medflow.deid.deidentify` (sequences at any depth,
    keyed UIDs, patient pseudonym, dates per the options). The burned-in policy applies to
    the item: one instance at risk quarantines (or fails) the whole item. ``meta["deid"]``
    records the configuration, the table edition, the method and the burned-in outcome, plus
    the key's location and fingerprint (never the key) for the ``dicom`` writer.
    """
    try:
        key = load_key(**_load_args(params.key_source()))
    except DeidKeyError as exc:
        raise StepError(STEP, sample.item_id, str(exc)) from None
    config = params.config()
    if sample.originals:
        return _mark_instances(sample, params, config, key)
    from pydicom import Dataset

    from medflow.deid.profile import deidentify

    headers, crosswalk, notes = [], {}, []
    risk, method = None, None
    for header in sample.headers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid values in real headers: de-identified anyway
            result = deidentify(Dataset.from_json(header), config, key)
            headers.append(result.dataset.to_json_dict(suppress_invalid_tags=True))
        if result.burned_in_risk and risk is None:
            risk = result.burned_in_reason
        crosswalk.update(result.crosswalk)
        notes.extend(n for n in result.notes if n not in notes)
        method = list(result.dataset.get("DeidentificationMethod") or [])
    _burned_in_decision(risk, config, sample.item_id)
    meta = _deid_meta(sample, params, config, key, method, risk, notes)
    return sample.replace(headers=headers, meta=meta, private_tables=_crosswalk_table(sample, params, crosswalk))


def _mark_instances(sample: Sample, params: AnonymizeParams, config: DeidConfig, key: bytes) -> Sample:
    """An item read without pixels: decide the burned-in policy on the originals, record the config.

    The ``dicom`` writer de-identifies the originals themselves (once, with this config and key):
    de-identifying them here too would do the work twice.
    """
    from medflow.deid.burned_in import burned_in_risk
    from medflow.deid.pseudonyms import Pseudonymizer

    risk = None
    for original in sample.originals:
        at_risk, reason = burned_in_risk(original, trust_flag=config.trust_burned_in_annotation)
        if at_risk:
            risk = reason
            break
    _burned_in_decision(risk, config, sample.item_id)
    crosswalk = {}
    if params.crosswalk is not None:
        pseudo = Pseudonymizer(key)
        for original in sample.originals:
            patient_id = str(original.get("PatientID", "") or "")
            crosswalk[patient_id] = pseudo.patient(patient_id)
    meta = _deid_meta(sample, params, config, key, None, risk, [])
    return sample.replace(meta=meta, private_tables=_crosswalk_table(sample, params, crosswalk))


def _burned_in_decision(risk: str | None, config: DeidConfig, item_id: str) -> None:
    """Raise per the burned-in policy when an instance of the item is at risk."""
    from medflow.deid.burned_in import apply_burned_in_policy

    try:
        decision = apply_burned_in_policy(risk is not None, risk or "", config.burned_in, item_id)
    except BurnedInTextError as exc:
        raise StepError(STEP, item_id, f"burned-in text risk ({exc.reason}); policy is 'fail'") from None
    if decision == "quarantine":
        raise QuarantineItem(STEP, item_id, f"burned-in text risk: {risk}")


def _deid_meta(
    sample: Sample, params: AnonymizeParams, config: DeidConfig, key: bytes,
    method: list[str] | None, risk: str | None, notes: list[str],
) -> dict[str, Any]:
    meta = dict(sample.meta)
    meta["deid"] = {
        "profile": config.profile,
        "options": sorted(config.options),
        "table_edition": edition(),
        "method": method,
        "burned_in": "no risk found" if risk is None else f"allowed: {risk}",
        "notes": notes,
        "config": config.model_dump(mode="json"),
        "key_source": params.key_source(),
        "key_id": key_id(key),
    }
    return meta


def _crosswalk_table(sample: Sample, params: AnonymizeParams, crosswalk: dict[str, str]) -> dict[str, list[list[str]]]:
    tables = dict(sample.private_tables)
    if params.crosswalk is not None:
        rows = [["original_patient_id", "pseudonym_patient_id"]]
        rows += [[original, pseudonym] for original, pseudonym in sorted(crosswalk.items())]
        tables[str(Path(params.crosswalk).resolve())] = rows
    return tables


def dry_run(params: AnonymizeParams, first_file: str | Path) -> list[str]:
    """What the step would do to each attribute of ``first_file``, one line per attribute (no key).

    For ``medflow plan`` / ``medflow run --dry-run``: the core runs with a throwaway key and
    only paths and actions are shown, never a value.
    """
    from pydicom import dcmread

    from medflow.deid.profile import plan_deidentification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(first_file, stop_before_pixels=False)
    config = params.config()
    lines = [f"profile {config.profile}, options: {', '.join(sorted(config.options)) or 'none'}, "
             f"Table E.1-1 edition {edition()}, burned_in: {config.burned_in}"]
    for path, _keyword, what in plan_deidentification(ds, config):
        lines.append(f"{path}: {what}")  # the path ends with the keyword, or the tag when private
    return lines


anonymize.dry_run = dry_run  # type: ignore[attr-defined]  # the CLI's generic dry-run hook
