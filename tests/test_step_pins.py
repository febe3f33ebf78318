"""Pinned outputs: (step, version) -> sha256 of its output on a tiny canonical input.

When a step's output changes, this test fails with "bump the version of 'window'":
the version joins the cache key, so a changed output under an unchanged version
would let old cached results pass for new ones. After bumping the version, re-pin
with ``python tests/test_step_pins.py`` (prints the table).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from medflow.engine.task import apply_step
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


def _ct_with_identity() -> Sample:
    sample = _ct_volume()
    for index, header in enumerate(sample.headers):
        header.update({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "PIN^PATIENT"}]},
            "00100020": {"vr": "LO", "Value": ["PIN-0001"]},
            "00080020": {"vr": "DA", "Value": ["20240312"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.99.1"]},
            "00080018": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.10.99.1.{index}"]},
        })
    return sample


# step -> (input builder, params); every registered step must appear here.
CASES = {
    "anonymize": (_ct_with_identity, {"key_env": "MEDFLOW_PIN_KEY",
                                      "options": ["retain-longitudinal-modified-dates"]}),
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
    ("anonymize", 1): "f51260a3ce4ea6cb5887e9638cbe39011c9b839730276d59059a8a6407c6dbb2",
    ("color_space", 2): "a66077ef6fa5e4655a648b8491cfc804899d783e8e5d8ab5eaea08cc7da57c3f",
    ("colormap", 1): "1b3ec2ca633e32ccf660b769f853fd67b786738499303b4990a398e00d76731f",
    ("crop_pad", 1): "1e93774b5eeb4593e1d729fa695db84729df1c6abe9f74d402ee9fd95626ccb9",
    ("denoise", 1): "0751df4a2b8075d6c8ec7d6570f5af4115f3c28cdf691390de6f83fc338c6d04",
    ("layout", 1): "674b53d862ba5cf2fab4ab9719d0df858fd1fd956d315ff0ba0bbd949fd0ad8c",
    ("modality_lut", 1): "62934f420e90c475a420438ff33ae93f8daaeeeaabcfdc29359ce16192711554",
    ("multi_window", 1): "0ff591560b9c1c1ae1fa1a8bd03628c35bfab13ba73318b98a0a515371b2c454",
    ("n4_bias_correction", 1): "9f5805f8c1ff386a68d06a30d5c243e94bd9a563d47cba31157f0d275ce0d5da",
    ("normalize", 1): "005b6265cd09b7f015b4c594908813ab52f09d111b471598364063a8019e2ad9",
    ("orient", 1): "b09d2383094b73e30f2412b4d3c225ce88998c6405058aca575da6ca11623b80",
    ("resample", 1): "196ee4a4b60971b3eae1f600c22e9f260321fd9607c6c4b8005a173e61224326",
    ("resize", 1): "2363ae792abd2e948a7bb419e8b2e1f0c912bc6bf9654f03e075ce6b5cf989e3",
    ("window", 2): "f2b070d5cd3e55a0ce92dfa7c3836489a3419bccc0ede85f516076ba0fe737d5",
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
    digest.update(json.dumps(sample.headers, sort_keys=True).encode())  # header steps (anonymize) count too
    return digest.hexdigest()


def _output(name: str) -> Sample:
    os.environ.setdefault("MEDFLOW_PIN_KEY", "pinned-test-key-not-a-secret-0123456789")
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
