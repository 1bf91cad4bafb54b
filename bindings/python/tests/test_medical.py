"""The binding's medical calls: DICOM/PNG ingestion against pydicom and Pillow, maps written back as
DICOM and read by pydicom, AUC-PR against scikit-learn, and the errors of bad files.

Run: DIFFMINE_LIB=target/release/libdiffmine.so python -m unittest discover -s bindings/python/tests -v
"""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from PIL import Image as PilImage
from sklearn.metrics import average_precision_score

from test_model import fixtures  # first: it puts the package on sys.path

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
        with self.assertRaises(diffmine.FileError) as missing:
            diffmine.read_image("/nonexistent/x.dcm")
        self.assertEqual(missing.exception.status, int(Status.ERR_IO))
        self.assertIsInstance(missing.exception, OSError)
        with self.assertRaises(diffmine.InvalidData) as garbage:
            diffmine.read_image(b"not an image at all")
        self.assertEqual(garbage.exception.status, int(Status.ERR_INVALID_DATA))
        self.assertIsInstance(garbage.exception, ValueError)
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

    def test_segmentation_and_parametric_map_carry_the_map_and_its_options(self) -> None:
        values = np.random.default_rng(2).normal(size=(32, 48)).astype(np.float32)
        options = dict(label="Mass", prompt="A CT with a mass.", null_prompt="A CT.", samples=12, seed=3)
        with tempfile.TemporaryDirectory() as tmp:
            diffmine.write_map_dicom(CT, values, Path(tmp) / "seg.dcm", kind="seg", **options)
            diffmine.write_map_dicom(CT, values, Path(tmp) / "pm.dcm", kind="parametric", **options)
            seg = pydicom.dcmread(Path(tmp) / "seg.dcm")
            pm = pydicom.dcmread(Path(tmp) / "pm.dcm")
            seg_pixels, pm_pixels = seg.pixel_array, pm.pixel_array
        self.assertEqual(seg.SOPClassUID, "1.2.840.10008.5.1.4.1.1.66.4")
        self.assertEqual((seg.SegmentationType, seg.SegmentSequence[0].SegmentLabel), ("FRACTIONAL", "Mass"))
        self.assertEqual(seg_pixels.shape, (128, 128))  # the source's pixel grid
        probability = (values - values.min()) / (values.max() - values.min())
        resampled = np.asarray(PilImage.fromarray(probability, "F").resize((128, 128), PilImage.BILINEAR))
        self.assertLessEqual(np.abs(seg_pixels / 255.0 - resampled).max(), 0.5 / 255 + 1e-6)
        self.assertEqual(pm.SOPClassUID, "1.2.840.10008.5.1.4.1.1.30")
        np.testing.assert_array_equal(pm_pixels, values)
        for written in (seg, pm):
            recorded = json.loads(written.ImageComments)
            self.assertEqual({key: recorded[key] for key in options}, options)

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


BBOX_LIST = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00000001_000.png,Mass,4.0,6.0,10.5,8.0,,,
00000002_000.png,Infiltrate,12.0,10.0,9.0,12.0,,,
00000003_000.png,Nodule,2.0,2.0,5.0,5.0,,,
"""
DATA_ENTRY = """Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Mass|Effusion,0,1,58,M,PA,32,32,0.143,0.143,
00000002_000.png,Infiltration,0,2,41,F,AP,32,32,0.143,0.143,
00000003_000.png,No Finding,0,3,33,F,PA,32,32,0.143,0.143,
"""


class Cxr8EvaluateTest(unittest.TestCase):
    def test_evaluation_writes_the_report_of_the_boxes_the_data_entry_confirms(self) -> None:
        rng = np.random.default_rng(3)
        calls = []
        with tempfile.TemporaryDirectory() as tmp, diffmine.Model(fixtures() / "sd15_tiny") as model:
            folder = Path(tmp) / "images_001" / "images"
            folder.mkdir(parents=True)
            for i in (1, 2, 3):
                PilImage.fromarray(rng.integers(0, 256, size=(32, 32), dtype=np.uint8)).save(folder / f"0000000{i}_000.png")
            (Path(tmp) / "BBox_List_2017.csv").write_text(BBOX_LIST)
            (Path(tmp) / "Data_Entry_2017.csv").write_text(DATA_ENTRY)
            out = Path(tmp) / "out"
            result = diffmine.cxr8_evaluate(
                model, tmp, Path(tmp) / "BBox_List_2017.csv", out, baseline=model,
                data_entry_csv=Path(tmp) / "Data_Entry_2017.csv", working_size=32, samples=2, batch=2,
                progress=lambda done, total: calls.append((done, total)))
            written = sorted(p.name for p in out.iterdir())
        # The Nodule box is not confirmed ("No Finding"); Infiltrate is read as Infiltration.
        self.assertEqual([r["disease"] for r in result["report"]["rows"]], ["Infiltration", "Mass"])
        self.assertEqual(len(result["images"]), 2)
        self.assertEqual(calls[-1], (4, 4))
        for row in result["report"]["rows"]:
            self.assertEqual(row["difference"], 0.0)
        self.assertEqual(written, ["overlays", "report.csv", "report.json", "report.md"])

    def test_cancelling_and_a_missing_table_fail_with_their_status(self) -> None:
        with tempfile.TemporaryDirectory() as tmp, diffmine.Model(fixtures() / "sd15_tiny") as model:
            with self.assertRaises(Error) as missing:
                diffmine.cxr8_evaluate(model, tmp, Path(tmp) / "BBox_List_2017.csv", Path(tmp) / "out")
            self.assertEqual(missing.exception.status, int(Status.ERR_IO))
            (Path(tmp) / "BBox_List_2017.csv").write_text(BBOX_LIST)
            for i in (1, 2, 3):
                PilImage.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(Path(tmp) / f"0000000{i}_000.png")
            with self.assertRaises(Error) as cancelled:
                diffmine.cxr8_evaluate(model, tmp, Path(tmp) / "BBox_List_2017.csv", Path(tmp) / "out", working_size=32,
                                       samples=2, batch=2, progress=lambda done, total: False)
            self.assertEqual(cancelled.exception.status, int(Status.ERR_CANCELLED))


if __name__ == "__main__":
    unittest.main()
