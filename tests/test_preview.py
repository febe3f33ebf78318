"""medflow preview: one montage PNG, one row per item, one tile per stage, nothing built."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medflow.cli import main
from medflow.preview import BAND, HEADER, PAD, TILE, display, preview, tile_origin
from medflow.recipe.loader import load_recipe
from medflow.sample import Sample

RECIPE = """\
medflow: 1
name: preview-test
source:
  sample: ct-phantom
steps:
  - step: window
    level: -600
    width: 1500
  - step: colormap
    map: blue_red
  - step: layout
    layout: NCHW
outputs:
  dir: {out}
engine:
  cache_dir: {cache}
  workers: 1
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # the embedded sample is written once for the module


def recipe_file(folder: Path, cache: Path, steps_text: str | None = None) -> Path:
    text = RECIPE.format(out=folder / "out", cache=cache)
    if steps_text is not None:
        head, rest = text.split("steps:\n", 1)
        text = head + "steps:\n" + steps_text + "outputs:\n" + rest.split("outputs:\n", 1)[1]
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def tile(image: np.ndarray, row: int, column: int) -> np.ndarray:
    y, x = tile_origin(row, column)
    return image[y : y + TILE, x : x + TILE].astype(int)


def test_montage_has_one_row_per_item_and_one_tile_per_stage(tmp_path, cache):
    loaded = load_recipe(recipe_file(tmp_path, cache))
    result = preview(loaded, n_items=2, out=tmp_path / "p.png")
    image = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_COLOR)[..., ::-1]  # RGB
    stages = 4  # read, window, colormap, layout
    assert image.shape == (PAD + 2 * (HEADER + BAND + TILE + PAD), PAD + stages * (TILE + PAD), 3)
    np.testing.assert_array_equal(image, result.montage)
    assert len(result.rows) == 2 and all(len(tiles) == stages for _, tiles in result.rows)
    assert result.errors == []
    assert [t.title for t in result.rows[0][1]] == ["0 read", "1 window", "2 colormap", "3 layout"]
    assert not (tmp_path / "out").exists(), "a preview writes nothing into the output folder"

    read, window, colormap, layout = (tile(image, 0, c) for c in range(stages))
    # read (HU stretched) and window (0..1 shown as is) are gray; they differ where the window changes values
    assert (read[..., 0] == read[..., 2]).all() and (window[..., 0] == window[..., 2]).all()
    assert np.abs(read - window).mean() > 10
    # blue->red: air (window ~0.23) is mostly blue, the body (window ~0.6..1) red; green stays 0 in the image box
    body = colormap[TILE // 2 - 10 : TILE // 2 + 10, TILE // 2 - 10 : TILE // 2 + 10]
    assert (body[..., 0] > body[..., 2]).all() and (body[..., 1] == 0).all()
    # the layout step changes the axes only: the inverted layout shows the same picture
    np.testing.assert_array_equal(layout, colormap)


def test_labels_carry_the_value_range_and_dtype(tmp_path, cache):
    result = preview(load_recipe(recipe_file(tmp_path, cache)), n_items=1, out=tmp_path / "p.png")
    read, window = result.rows[0][1][:2]
    assert read.lines[0].startswith("range -1024 .. ") and read.lines[0].endswith("float32")
    assert "stretched" in read.lines[2]
    assert window.lines[0].endswith(" .. 1  float32") and window.lines[2] == "shown: 0..1 as is"


def test_a_failing_step_is_shown_and_reported(tmp_path, cache):
    steps = "  - step: color_space\n    to: ycbcr\n"  # needs RGB; the CT is gray
    result = preview(load_recipe(recipe_file(tmp_path, cache, steps)), n_items=1, out=tmp_path / "p.png")
    tiles = result.rows[0][1]
    assert [t.title for t in tiles] == ["0 read", "1 color_space"]
    assert tiles[1].image is None and "color_space" in tiles[1].error
    assert len(result.errors) == 1
    assert (tmp_path / "p.png").is_file()


def test_cli_preview(tmp_path, cache, capsys):
    out = tmp_path / "cli.png"
    code = main(["preview", str(recipe_file(tmp_path, cache)), "--items", "1", "--out", str(out),
                 "--set", "steps[0].width=400"])
    assert code == 0 and out.is_file()
    assert "preview:" in capsys.readouterr().out
    image = cv2.imread(str(out))
    assert image.shape[0] == PAD + HEADER + BAND + TILE + PAD
    assert main(["preview", str(recipe_file(tmp_path, cache)), "--items", "0"]) == 2


def test_cli_preview_exit_1_when_a_step_fails(tmp_path, cache):
    path = recipe_file(tmp_path, cache, "  - step: color_space\n    to: ycbcr\n")
    assert main(["preview", str(path), "--items", "1", "--out", str(tmp_path / "f.png")]) == 1


# display(): the middle slice, the layout undone, the value mapping


def test_display_undoes_nchw_and_shows_the_middle_slice():
    stack = np.zeros((5, 4, 6, 3), np.uint8)  # zyxc
    stack[2, 1, 3] = (200, 10, 30)
    nchw = Sample("a", np.ascontiguousarray(stack.transpose(0, 3, 1, 2)), "nchw", channels=("r", "g", "b"))
    image, lines = display(nchw)
    np.testing.assert_array_equal(image, stack[2])
    assert lines[1] == "nchw 5x3x4x6  mid z 2/5" and lines[2] == "shown: uint8 as is"


def test_display_does_not_stretch_unit_range_floats_but_stretches_others():
    unit = Sample("u", np.array([[[0.25, 0.5]]], np.float32), "zyx")
    image, _ = display(unit)
    assert image[0, :, 0].tolist() == [64, 128]  # rint(0.25 * 255) = 64, rint(127.5) = 128
    hu = Sample("h", np.array([[[-1000.0, 0.0, 1000.0]]], np.float32), "zyx")
    image, lines = display(hu)
    assert image[0, :, 0].tolist() == [0, 128, 255] and "stretched" in lines[2]


def test_display_names_non_rgb_channels():
    ycbcr = Sample("y", np.full((1, 2, 2, 3), 0.5, np.float32), "zyxc", channels=("y", "cb", "cr"))
    assert display(ycbcr)[1][2].endswith("y,cb,cr as RGB")
    five = Sample("f", np.zeros((1, 2, 2, 5), np.float32), "zyxc", channels=tuple("abcde"))
    image, lines = display(five)
    assert image.shape == (2, 2, 3) and "ch 0 of 5 (a)" in lines[2]
