"""Pinned outputs: (step, version) -> sha256 of its output on a tiny canonical input.

When a step's output changes, this test fails with "bump the version of 'window'":
the version joins the cache key, so a changed output under an unchanged version
would let old cached results pass for new ones. After bumping the version, re-pin
with ``python tests/test_step_pins.py`` (prints the table).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from medflow.engine.run import apply_step
from medflow.recipe.model import recipe_model
from medflow.sample import Geometry, Sample
from medflow.steps.registry import all_steps


def _ct_volume() -> Sample:
    z, y, x = np.meshgrid(np.arange(6), np.arange(16), np.arange(16), indexing="ij")
    hu = (-1000 + 60 * x + 40 * y + 100 * z + 3 * ((x * 7 + y * 3 + z) % 5)).astype(np.float32)
    geometry = Geometry(
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        pixel_spacing=(0.8, 0.7),
        slice_positions=tuple((-5.0, -6.0, 2.5 * k) for k in range(6)),
        slice_spacing=2.5,
    )
    headers = [{"00080060": {"vr": "CS", "Value": ["CT"]}, "00281050": {"vr": "DS", "Value": [40]},
                "00281051": {"vr": "DS", "Value": [400]}} for _ in range(6)]
    return Sample("ct-canonical", hu, "zyx", (), geometry, headers,
                  {"modality": "CT", "units": "HU", "photometric_interpretation": "MONOCHROME2"})


def _unit_volume() -> Sample:
    sample = _ct_volume()
    return sample.replace(pixels=((sample.pixels + 1000) / 2500).clip(0, 1).astype(np.float32))


def _rgb_volume() -> Sample:
    sample = _unit_volume()
    rgb = np.stack([sample.pixels, 1 - sample.pixels, sample.pixels ** 2], axis=-1).astype(np.float32)
    return sample.replace(pixels=rgb, axes="zyxc", channels=("r", "g", "b"))


# step -> (input builder, params); every registered step must appear here.
CASES = {
    "window": (_ct_volume, {"level": 40, "width": 400}),
    "multi_window": (_ct_volume, {"windows": ["brain", "subdural", {"level": 40, "width": 380, "name": "soft"}]}),
    "modality_lut": (_ct_volume, {}),
    "normalize": (_ct_volume, {"mode": "zscore"}),
    "colormap": (_unit_volume, {"map": "blue_red"}),
    "color_space": (_rgb_volume, {"to": "ycbcr"}),
    "layout": (_unit_volume, {"layout": "NHWC", "dtype": "uint8", "scale": 255}),
    "resample": (_ct_volume, {"spacing": [2.0, 1.0, 1.0]}),
    "orient": (_ct_volume, {"code": "RAS"}),
    "crop_pad": (_ct_volume, {"size": [4, 20, 12], "pad_value": -1024}),
    "resize": (_ct_volume, {"size": [8, 8], "interpolation": "area"}),
    "n4_bias_correction": (_ct_volume, {"shrink_factor": 1, "iterations": [5], "mask": "positive",
                                        "intensity_offset": 1100}),
    "denoise": (_ct_volume, {"method": "curvature_flow", "iterations": 2}),
}

PINS = {
    # (name, version): sha256 of the output (see _fingerprint)
    ("color_space", 1): "e6160fd99d102fc24f368d0adc2f700f890ba9cc7ae528a73c269a14d4145804",
    ("colormap", 1): "2ac54dbce64cd36f86affbc3f98e9624dd22007b4aab4aea1bb771779d388e58",
    ("crop_pad", 1): "e469eb3cba44acc6bff1118c6521cde2c169cf3a5d6563d9fbc1a96088223690",
    ("denoise", 1): "cd1aa81d23a4bf58ac6cd49a79a9e089e8c992ba19405b890e3c336112c5a17f",
    ("layout", 1): "df6d7113657cc7a5768eec60b61ec8038982a9f82aa76a11721406359e2f4931",
    ("modality_lut", 1): "e0aa3c115164d78d79b20a2509466d561e45ccb55d17b923977429498fb7337d",
    ("multi_window", 1): "280420481f23e1a13893b64596e8b63be085d0268b9e8ec460dbeeeb2ed0149f",
    ("n4_bias_correction", 1): "2dfceb7c12e3e56b0236ad22a3fe8e9a98a5fc187bab7e86f17ea5e7b65f6d85",
    ("normalize", 1): "12a63943a4665a1e1979f0d26e14c215997ff2b27f9b25b8eee2056cebf21a9c",
    ("orient", 1): "0e6f0f57038b212a324dd074fabcf2b0389818bea00b06d8d73faad8b7675a0c",
    ("resample", 1): "2011bd68987b1f4438d263748e1d1ba1d0a7be7d692ac9323a1d6b3aedf2ef64",
    ("resize", 1): "bbc385558748b093a428e965ef19b75c7afcd642e15bfa248d8f3cbf2b93f967",
    ("window", 2): "f4390e7bcb7b0064fa90e7e1d0fbfcb6da556ecddd9ddc0a90305cc11330c314",
}


def _params(name: str, params: dict):
    model = recipe_model()
    recipe = model.model_validate({"medflow": 1, "name": "pin", "source": {"sample": "ct-phantom"},
                                   "steps": [{"step": name, **params}], "outputs": {"dir": "x"}})
    return recipe.steps[0]


def _fingerprint(sample: Sample) -> str:
    """sha256 over dtype, shape, axes, channels and the values (floats rounded to 1e-4 so a
    last-bit difference between CPU instruction sets does not count as a change)."""
    values = sample.pixels
    if np.issubdtype(values.dtype, np.floating):
        values = np.round(values.astype(np.float64), 4) + 0.0  # + 0.0 folds -0.0 into 0.0
    digest = hashlib.sha256()
    digest.update(f"{sample.pixels.dtype.str}|{sample.pixels.shape}|{sample.axes}|{sample.channels}".encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _output(name: str) -> Sample:
    build_input, params = CASES[name]
    return apply_step(_params(name, params), build_input())


def test_every_registered_step_has_a_canonical_case():
    missing = sorted({spec.name for spec in all_steps()} - set(CASES))
    assert missing == [], f"add a canonical input and params for {missing} in CASES and pin them"


@pytest.mark.parametrize("spec", all_steps(), ids=lambda s: s.name)
def test_step_output_is_pinned_to_its_version(spec):
    key = (spec.name, spec.version)
    assert key in PINS, f"no pin for {key}: run `python tests/test_step_pins.py` and add it"
    assert _fingerprint(_output(spec.name)) == PINS[key], (
        f"the output of '{spec.name}' changed: bump the version of '{spec.name}' "
        f"(now {spec.version}) and re-pin"
    )


if __name__ == "__main__":
    for spec in all_steps():
        print(f'    ("{spec.name}", {spec.version}): "{_fingerprint(_output(spec.name))}",')
