"""read_image and the intensity scaling, on small files made here from numpy arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from trcgl.data.images import (
    is_dicom,
    minmax_to_uint8,
    read_image,
    robust_window,
    scale_to_uint8,
)
from trcgl.errors import DataError, ImageReadError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def gradient(h: int, w: int, high: float, seed: int = 0) -> np.ndarray:
    """A smooth diagonal gradient from 0 to ``high`` plus a little noise (float64)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy / max(h - 1, 1) + xx / max(w - 1, 1)) / 2.0 * high
    noise = np.random.default_rng(seed).normal(0.0, high * 0.01, size=(h, w))
    return np.clip(base + noise, 0, high)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    bits_stored: int = 12,
    preamble: bool = True,
) -> Path:
    """Write a CR DICOM (Explicit VR Little Endian) holding ``pixels`` (uint16, 2-D or F×H×W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "P1"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    ds.save_as(path, enforce_file_format=preamble)
    return path


# --------------------------------------------------------------------------------------------
# scale_to_uint8 (pure)


def test_scale_maps_robust_percentile_window_linearly() -> None:
    arr = gradient(64, 80, 4095.0).astype(np.uint16)  # 12 bits used out of 16
    arr[0, 0] = 65535  # a burnt-in marker: must not squash the contrast
    low, high = np.percentile(arr.astype(np.float64), [0.5, 99.5])
    out = scale_to_uint8(arr)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    expected = np.clip(np.rint((arr.astype(np.float64) - low) * 255.0 / (high - low)), 0, 255)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert out.min() == 0 and out.max() == 255
    assert out[0, 0] == 255  # clipped, not wrapped
    # most of the range is used although the image holds only 12 bits
    assert np.percentile(out, 95) - np.percentile(out, 5) > 150


def test_scale_of_12_bit_image_matches_full_range_image() -> None:
    """A 12-bit image stored in 16 bits and the same image ×16 give the same 8-bit result."""
    arr12 = gradient(50, 50, 4095.0, seed=3).astype(np.uint16)
    arr16 = arr12 * np.uint16(16)
    assert np.array_equal(scale_to_uint8(arr12), scale_to_uint8(arr16))


def test_scale_constant_image_gives_zeros_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out = scale_to_uint8(np.full((7, 9), 1234, dtype=np.uint16))
    assert out.dtype == np.uint8 and not out.any()


def test_scale_near_constant_image_falls_back_to_min_max() -> None:
    arr = np.full((100, 100), 500, dtype=np.uint16)
    arr[0, :3] = [10, 900, 1000]  # fewer than 0.5 % of the pixels differ
    out = scale_to_uint8(arr)
    assert out[0, 0] == 0 and out[0, 2] == 255
    assert out[50, 50] == round((500 - 10) * 255 / 990)


def test_scale_float_with_nan_and_inf() -> None:
    arr = gradient(20, 20, 1.0).astype(np.float32) * 3.0
    arr[0, 0], arr[0, 1], arr[0, 2] = np.nan, np.inf, -np.inf
    out = scale_to_uint8(arr)
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, 1] == 255 and out[0, 2] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("n", [1, 2, 999, 1000])
def test_robust_window_equals_numpy_percentile(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    high = 250 if dtype == np.uint8 else 4000
    arr = rng.integers(0, high, size=n).astype(dtype)
    low_q, high_q = np.percentile(arr.astype(np.float64), [0.5, 99.5])
    got = robust_window(arr)
    if high_q > low_q:
        assert got == pytest.approx((low_q, high_q))
    else:
        assert got == (float(arr.min()), float(arr.max()))


def test_minmax_constant_is_zero() -> None:
    assert not minmax_to_uint8(np.full((3, 3), 5.0)).any()
    assert minmax_to_uint8(np.array([[-1.0, 1.0]])).tolist() == [[0, 255]]


# --------------------------------------------------------------------------------------------
# PNG / JPEG


def test_read_8bit_png_unchanged(tmp_path: Path) -> None:
    arr = gradient(40, 56, 255.0).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (40, 56)
    assert np.array_equal(out, arr)


def test_read_16bit_png_uses_robust_window(tmp_path: Path) -> None:
    arr = gradient(48, 40, 4095.0, seed=5).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "p16.png")
    assert Image.open(tmp_path / "p16.png").mode.startswith("I;16")
    out = read_image(str(tmp_path / "p16.png"))
    assert out.shape == (48, 40)
    assert np.array_equal(out, scale_to_uint8(arr))


def test_read_constant_16bit_png(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 3000, dtype=np.uint16)).save(tmp_path / "c.png")
    assert not read_image(tmp_path / "c.png").any()


def test_read_rgb_jpeg_is_grayscale(tmp_path: Path) -> None:
    gray = gradient(64, 64, 255.0).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "x.jpg", quality=95)
    out = read_image(tmp_path / "x.jpg")
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gray.astype(int)).mean() < 3


def test_read_rgba_la_and_palette_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    alpha = np.full((20, 30, 1), 128, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1), mode="RGBA").save(tmp_path / "a.png")
    expected = np.array(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_image(tmp_path / "a.png"), expected)

    gray = gradient(20, 30, 255.0).astype(np.uint8)
    Image.fromarray(np.stack([gray, alpha[..., 0]], axis=-1), mode="LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), gray)

    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8


# --------------------------------------------------------------------------------------------
# DICOM


def test_dicom_window_and_monochrome1_inversion(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (32, 1))
    mono2 = write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2", window=(2048, 1024))
    mono1 = write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", window=(2048, 1024))
    a2, a1 = read_image(mono2), read_image(mono1)
    assert a2.shape == (32, 64) and a2.dtype == np.uint8
    below, above = pixels < 1500, pixels > 2600
    assert (a2[below] == 0).all() and (a2[above] == 255).all()  # window applied
    inside = a2[0, (pixels[0] > 1600) & (pixels[0] < 2500)]
    assert np.all(np.diff(inside.astype(int)) >= 0) and 0 < inside.min() < inside.max() < 255
    assert np.array_equal(a1, 255 - a2)  # MONOCHROME1 inverted: bone stays bright


def test_dicom_modality_lut_applied_before_window(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))
    # HU = 2 * stored - 2000; window centre 0 HU, width 400 → stored 900 … 1100
    path = write_dicom(tmp_path / "ct.dcm", pixels, window=(0, 400), rescale=(2.0, -2000.0))
    out = read_image(path)
    assert (out[pixels < 880] == 0).all() and (out[pixels > 1120] == 255).all()


def test_dicom_without_window_is_min_max(tmp_path: Path) -> None:
    pixels = (gradient(16, 16, 3000.0) + 100).astype(np.uint16)
    out = read_image(write_dicom(tmp_path / "nw.dcm", pixels))
    assert out.min() == 0 and out.max() == 255
    assert np.array_equal(out, minmax_to_uint8(pixels))


def test_dicom_detected_by_magic_and_multiframe_first_frame(tmp_path: Path) -> None:
    frames = np.stack([gradient(16, 24, 4000.0, seed=s) for s in range(3)]).astype(np.uint16)
    path = write_dicom(tmp_path / "noext.img", frames)
    assert is_dicom(path)
    out = read_image(path)
    assert out.shape == (16, 24)
    assert np.array_equal(out, minmax_to_uint8(frames[0]))


def test_dicom_without_preamble_read_by_suffix(tmp_path: Path) -> None:
    pixels = (gradient(8, 8, 4000.0) + 1).astype(np.uint16)
    path = write_dicom(tmp_path / "raw.dcm", pixels, preamble=False)
    assert np.array_equal(read_image(path), minmax_to_uint8(pixels))


# --------------------------------------------------------------------------------------------
# errors


def test_truncated_png_raises_naming_file(tmp_path: Path) -> None:
    Image.fromarray(gradient(128, 128, 255.0).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    bad = tmp_path / "broken_scan.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    assert "broken_scan.png" in str(info.value)
    assert info.value.path == str(bad)
    assert isinstance(info.value, DataError)


def test_truncated_dicom_raises(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "t.dcm", gradient(64, 64, 4000.0).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ImageReadError, match=r"t\.dcm"):
        read_image(path)


@pytest.mark.parametrize("content", [None, b"", b"not an image at all"])
def test_missing_empty_or_garbage_file_raises(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "nope.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=r"nope\.png"):
        read_image(path)


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)
