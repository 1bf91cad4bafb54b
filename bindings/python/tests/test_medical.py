"""The binding's medical calls: DICOM/PNG ingestion against pydicom and Pillow, maps written back as
DICOM and read by pydicom, AUC-PR against scikit-learn, and the errors of bad files.

Run: python -m unittest discover -s bindings/python/tests -v
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from PIL import Image as PilImage
from sklearn.metrics import average_precision_score

import diffmine
from diffmine import Error, Status

CT = get_testdata_file("CT_small.dcm")
MONOCHROME1 = get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm")


class ReadImageTest(unittest.TestCase):
    def test_dicom_min_max_levels_equal_pydicom_modality_values_rescaled(self) -> None:
        image = diffmine.read_image(CT, min_max=True)
        values = apply_modality_lut(pydicom.dcmread(CT).pixel_array, pydicom.dcmread(CT)).astype(np.float64)
        expected = (values - values.min()) / (values.max() - values.min())
        self.assertEqual(image.pixels.shape, (128, 128, 1))
        self.assertLess(np.abs(image.pixels[:, :, 0] - expected).max(), 1e-6)

    def test_metadata_equals_the_data_set(self) -> None:
        ds = pydicom.dcmread(CT)
        image = diffmine.read_image(CT)
        self.assertTrue(image.is_dicom)
        self.assertEqual(image.frames, 1)
        self.assertEqual(image.study_instance_uid, ds.StudyInstanceUID)
        self.assertEqual(image.sop_instance_uid, ds.SOPInstanceUID)
        self.assertEqual(image.patient_id, ds.PatientID)
        self.assertEqual(image.modality, "CT")
        self.assertEqual(image.pixel_spacing, tuple(float(s) for s in ds.PixelSpacing))
        self.assertEqual(image.transfer_syntax_uid, ds.file_meta.TransferSyntaxUID)

    def test_bytes_decode_like_the_file_and_an_explicit_window_clips(self) -> None:
        from_file = diffmine.read_image(CT, window=(40.0, 400.0))
        from_bytes = diffmine.read_image(Path(CT).read_bytes(), window=(40.0, 400.0))
        np.testing.assert_array_equal(from_file.pixels, from_bytes.pixels)
        self.assertEqual(from_file.pixels.min(), 0.0)
        self.assertFalse(np.array_equal(from_file.pixels, diffmine.read_image(CT).pixels))

    def test_png_loads_as_an_image_without_dicom_attributes(self) -> None:
        rgb = np.random.default_rng(0).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.png"
            PilImage.fromarray(rgb).save(path)
            image = diffmine.read_image(path)
        self.assertFalse(image.is_dicom)
        self.assertIsNone(image.study_instance_uid)
        self.assertLess(np.abs(image.pixels - rgb / 255.0).max(), 1e-6)

    def test_bad_files_fail_with_the_file_and_the_problem(self) -> None:
        with self.assertRaises(Error) as missing:
            diffmine.read_image("/nonexistent/x.dcm")
        self.assertEqual(missing.exception.status, int(Status.ERR_IO))
        with self.assertRaises(Error) as garbage:
            diffmine.read_image(b"not an image at all")
        self.assertEqual(garbage.exception.status, int(Status.ERR_INVALID_DATA))
        truncated = Path(CT).read_bytes()[:2000]
        with self.assertRaises(Error) as cut:
            diffmine.read_image(truncated)
        self.assertEqual(cut.exception.status, int(Status.ERR_INVALID_DATA))
        with self.assertRaises(Error) as frame:
            diffmine.read_image(CT, frame=3)
        self.assertEqual(frame.exception.status, int(Status.ERR_INVALID_ARGUMENT))
        self.assertIn("frame 3", frame.exception.message)


class WriteMapTest(unittest.TestCase):
    def test_raw_map_round_trips_through_pydicom_in_the_source_study(self) -> None:
        source = pydicom.dcmread(CT)
        values = np.random.default_rng(1).normal(size=(32, 48)).astype(np.float32)
        series = diffmine.new_uid()
        with tempfile.TemporaryDirectory() as tmp:
            raw_uid = diffmine.write_map_dicom(CT, values, Path(tmp) / "raw.dcm", kind="raw", series_instance_uid=series)
            overlay_uid = diffmine.write_map_dicom(CT, values, Path(tmp) / "overlay.dcm", series_instance_uid=series)
            raw = pydicom.dcmread(Path(tmp) / "raw.dcm")
            overlay = pydicom.dcmread(Path(tmp) / "overlay.dcm")
            back = apply_modality_lut(raw.pixel_array, raw)
            overlay_pixels = overlay.pixel_array
        self.assertNotEqual(raw_uid, overlay_uid)
        self.assertEqual((raw.SOPInstanceUID, raw.SeriesInstanceUID), (raw_uid, series))
        self.assertEqual(overlay.SeriesInstanceUID, series)
        self.assertEqual(raw.StudyInstanceUID, source.StudyInstanceUID)
        self.assertEqual(raw.PatientID, source.PatientID)
        self.assertEqual(raw.SourceImageSequence[0].ReferencedSOPInstanceUID, source.SOPInstanceUID)
        slope = float(raw.RescaleSlope)
        self.assertLessEqual(np.abs(back - values).max(), slope / 2 + 1e-6)
        self.assertEqual(overlay_pixels.shape, (32, 48, 3))

    def test_bad_kind_and_non_finite_maps_are_refused(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(Error):
                diffmine.write_map_dicom(CT, np.zeros((4, 4)), Path(tmp) / "x.dcm", kind="jpeg")
            with self.assertRaises(Error) as nan:
                diffmine.write_map_dicom(CT, np.full((4, 4), np.nan), Path(tmp) / "x.dcm")
            self.assertEqual(nan.exception.status, int(Status.ERR_INVALID_ARGUMENT))


class AucPrTest(unittest.TestCase):
    def test_average_precision_equals_scikit_learn(self) -> None:
        rng = np.random.default_rng(2)
        for _ in range(5):
            height, width = rng.integers(8, 40, size=2)
            values = rng.normal(size=(height, width)).astype(np.float32)
            x, y = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
            box = (x, y, rng.uniform(2, width - x), rng.uniform(2, height - y))
            ap, area = diffmine.auc_pr(values, [box])
            centres_x, centres_y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
            # Half-open boxes: [x, x + w) × [y, y + h).
            inside = (centres_x >= box[0]) & (centres_x < box[0] + box[2]) & (centres_y >= box[1]) & (centres_y < box[1] + box[3])
            if not inside.any():
                self.assertTrue(np.isnan(ap))
                continue
            self.assertAlmostEqual(ap, average_precision_score(inside.ravel(), values.ravel()), delta=1e-9)
            self.assertTrue(0.0 <= area <= 1.0)

    def test_a_box_outside_the_map_is_invalid_data(self) -> None:
        with self.assertRaises(Error) as outside:
            diffmine.auc_pr(np.zeros((8, 8)), [(100.0, 0.0, 4.0, 4.0)])
        self.assertEqual(outside.exception.status, int(Status.ERR_INVALID_DATA))


if __name__ == "__main__":
    unittest.main()
