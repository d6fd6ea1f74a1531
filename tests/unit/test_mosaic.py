"""compose_mosaic with real libvips: grid geometry, centring, alpha blending, encodings."""

from __future__ import annotations

import pytest
import pyvips
from ingest_previewer.mosaic import Mosaic, MosaicSpec, compose_mosaic, grid_shape, mosaic_size

RED = [255, 0, 0, 255]


def _png(width: int, height: int, pixel: list[int], bands: int = 4) -> bytes:
    image = pyvips.Image.black(width, height, bands=bands).new_from_image(pixel[:bands])
    interpretation = "srgb" if bands >= 3 else "b-w"
    return bytes(image.copy(interpretation=interpretation).cast("uchar").pngsave_buffer())


def _decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def _check(mosaic: Mosaic, width: int, height: int, bands: int = 3) -> pyvips.Image:
    """The mosaic's PNG, decoded, after checking both encodings' size and bands (sRGB; alpha
    only over a background that is not opaque)."""
    assert (mosaic.width, mosaic.height) == (width, height)
    png, webp = _decode(mosaic.png), _decode(mosaic.webp)
    assert png.get("vips-loader") == "pngload_buffer"
    assert webp.get("vips-loader") == "webpload_buffer"
    for image in (png, webp):
        assert (image.width, image.height, image.bands) == (width, height, bands)
        assert image.interpretation == "srgb"
    return png


@pytest.mark.parametrize(
    ("count", "columns", "shape"),
    [(1, None, (1, 1)), (4, None, (2, 2)), (5, None, (3, 2)), (10, None, (4, 3)), (3, 5, (3, 1))],
)
def test_grid_shape(count: int, columns: int | None, shape: tuple[int, int]) -> None:
    assert grid_shape(count, MosaicSpec(columns=columns)) == shape


def test_five_tiles_make_a_three_by_two_grid() -> None:
    spec = MosaicSpec(tile=32, gap=4, padding=6)
    tiles = [_png(32, 32, RED) for _ in range(5)]

    mosaic = compose_mosaic(tiles, spec)

    # 3 columns: 6 + 32 + 4 + 32 + 4 + 32 + 6 = 116; 2 rows: 6 + 32 + 4 + 32 + 6 = 80
    png = _check(mosaic, 116, 80)
    assert mosaic_size(5, spec) == (116, 80)
    assert mosaic.tiles == 5
    assert png(6, 6) == [255, 0, 0]  # first cell
    assert png(2, 2) == [255, 255, 255]  # padding
    assert png(40, 10) == [255, 255, 255]  # gap between cells
    assert png(6 + 2 * 36 + 10, 6 + 36 + 10) == [255, 255, 255]  # empty sixth cell


def test_small_non_square_tile_is_centred() -> None:
    spec = MosaicSpec(tile=20, gap=0, padding=0)
    mosaic = compose_mosaic([_png(10, 4, RED)], spec)

    png = _check(mosaic, 20, 20)
    assert png(5, 8) == [255, 0, 0]
    assert png(14, 11) == [255, 0, 0]
    assert png(4, 8) == [255, 255, 255]
    assert png(5, 7) == [255, 255, 255]


def test_alpha_is_blended_over_the_background() -> None:
    spec = MosaicSpec(tile=8, gap=0, padding=0, background=(0, 0, 255, 255))
    transparent = _png(8, 8, [255, 0, 0, 0])
    half = _png(8, 8, [255, 0, 0, 128])

    png = _check(compose_mosaic([transparent, half], spec), 16, 8)

    assert png(4, 4) == [0, 0, 255]
    red, _, blue = png(12, 4)
    assert 120 <= red <= 135
    assert 120 <= blue <= 135


def test_oversized_tile_is_shrunk_to_fit() -> None:
    spec = MosaicSpec(tile=16, gap=2, padding=1)
    png = _check(compose_mosaic([_png(64, 32, RED), _png(16, 16, RED)], spec), 36, 18)

    assert png(1, 5) == [255, 0, 0]  # 16×8 centred: rows 4..11 of the cell
    assert png(1, 2) == [255, 255, 255]


def test_grey_and_alpha_less_tiles_are_accepted() -> None:
    spec = MosaicSpec(tile=8, gap=0, padding=0)
    tiles = [_png(8, 8, [90], bands=1), _png(8, 8, [10, 200, 30], bands=3)]

    png = _check(compose_mosaic(tiles, spec), 16, 8)

    assert png(4, 4) == [90, 90, 90]
    assert png(12, 4) == [10, 200, 30]


def test_fixed_columns_and_transparent_background() -> None:
    spec = MosaicSpec(tile=10, gap=2, padding=3, columns=2, background=(0, 0, 0, 0))
    png = _check(compose_mosaic([_png(10, 10, RED)] * 3, spec), 28, 28, bands=4)

    assert png(0, 0) == [0, 0, 0, 0]
    assert png(3, 15) == [255, 0, 0, 255]


def test_default_spec_with_real_renditions_sized_tiles() -> None:
    tiles = [_png(128, 128, RED), _png(128, 96, RED), _png(64, 64, RED)]

    mosaic = compose_mosaic(tiles, MosaicSpec())

    _check(mosaic, *mosaic_size(3, MosaicSpec()))
    assert (mosaic.width, mosaic.height) == (16 * 2 + 2 * 128 + 8, 16 * 2 + 2 * 128 + 8)


@pytest.mark.parametrize("effort", [0, 6])
def test_the_webp_is_encoded_at_the_specs_effort(effort: int) -> None:
    # Noise, so that every effort codes it differently: the WebP equals libvips' own encoding
    # of the mosaic's pixels (its lossless PNG) at that effort, and not at the other one.
    noise = pyvips.Image.gaussnoise(64, 64, mean=128, sigma=60).cast("uchar")
    tile = noise.bandjoin([noise.rot90(), noise.flip("horizontal"), 255]).copy(
        interpretation="srgb"
    )
    spec = MosaicSpec(tile=64, webp_effort=effort)

    mosaic = compose_mosaic([bytes(tile.pngsave_buffer())] * 2, spec)

    pixels = _decode(mosaic.png)

    def webp(at: int) -> bytes:
        return bytes(pixels.webpsave_buffer(Q=spec.webp_quality, effort=at, keep="none"))

    assert mosaic.webp == webp(effort)
    assert mosaic.webp != webp(6 - effort)


@pytest.mark.parametrize(
    ("flat_tiles", "mode", "lossless"),
    [(True, "auto", True), (False, "auto", False), (True, "lossy", False)],
)
def test_the_webp_is_lossless_only_over_flat_tiles_in_auto_mode(
    flat_tiles: bool, mode: str, lossless: bool
) -> None:
    spec = MosaicSpec(tile=32, gap=4, padding=6, webp_mode=mode)
    tiles = [_png(32, 32, RED), _png(20, 32, [0, 128, 0, 255]), _png(32, 12, [0, 0, 255, 128])]

    mosaic = compose_mosaic(tiles, spec, flat_tiles=flat_tiles)

    png = _check(mosaic, *mosaic_size(3, spec))
    webp = _decode(mosaic.webp)
    assert mosaic.webp_lossless is lossless
    # A lossless WebP carries a VP8L chunk, a lossy one VP8.
    assert (b"VP8L" in mosaic.webp[:64]) is lossless
    # Lossless: the same pixels as the PNG, exactly. Lossy: close, not exact (its chroma is
    # subsampled, so the red, green and blue-over-white cells' edges differ).
    difference = (png - webp).abs().max()
    assert difference == 0 if lossless else difference > 0


def test_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        compose_mosaic([], MosaicSpec())


def test_invalid_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="tile"):
        MosaicSpec(tile=0)
    with pytest.raises(ValueError, match="columns"):
        MosaicSpec(columns=0)
    with pytest.raises(ValueError, match="webp_effort"):
        MosaicSpec(webp_effort=7)
    with pytest.raises(ValueError, match="webp_mode must be one of auto, lossy"):
        MosaicSpec(webp_mode="lossless")
