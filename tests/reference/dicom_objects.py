#!/usr/bin/env python3
"""Sources for, and independent readers of, the DICOM objects libdiffmine writes maps as
(tests/dicom_objects.rs).

Usage:
  dicom_objects.py sources DIR        writes DIR/cr.dcm (Computed Radiography, MONOCHROME1, 12 bits
                                      stored in 16, Rescale Slope 2 / Intercept -1024, a window) and
                                      DIR/dx.dcm (Digital X-Ray, MONOCHROME2, 12 bits, no rescale)
                                      and DIR/ct.dcm (pydicom's CT_small.dcm: a Frame of Reference,
                                      plane position and orientation)
  dicom_objects.py read OUT.json FILE...

`read` writes one object per file, as pydicom and highdicom 0.28.2 read it: the identifying
attributes, the references to the source, Image Comments parsed as JSON, and the pixel values:
  "pydicom":   Secondary Capture: pixel_array through apply_modality_lut; Segmentation:
               pixel_array / MaximumFractionalValue; Parametric Map: the Float Pixel Data;
  "highdicom": Secondary Capture: hd.imread(...).get_frame(1) without the VOI transform (the
               Modality LUT applied); Segmentation: hd.seg.segread(...).get_pixels_by_source_instance
               with rescale_fractional; Parametric Map: hd.imread(...).get_volume() (the Real World
               Value Mapping applied);
each flattened in C order. A Segmentation adds its segment's label, description, algorithm type,
name, version and parameters; a Parametric Map its Real World Value Mapping.
"""

import json
import shutil
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def radiograph(path: Path, sop_class: str, modality: str, photometric: str, rows: int, columns: int,
               rescale: bool) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Test^{modality}", f"{modality}1", "", "F"
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "", "1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = modality, 1, 1, "Test"
    ds.ImageType, ds.PatientOrientation, ds.ViewPosition = ["ORIGINAL", "PRIMARY"], ["L", "F"], "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.2, 0.25]
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -1024, "US"
        ds.WindowCenter, ds.WindowWidth = 2000, 4000
    y, x = np.mgrid[0:rows, 0:columns]
    ds.PixelData = ((x * 61 + y * 37) % 4096).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def sources(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    radiograph(out_dir / "cr.dcm", "1.2.840.10008.5.1.4.1.1.1", "CR", "MONOCHROME1", 40, 48, rescale=True)
    radiograph(out_dir / "dx.dcm", "1.2.840.10008.5.1.4.1.1.1.1", "DX", "MONOCHROME2", 36, 30, rescale=False)
    shutil.copyfile(get_testdata_file("CT_small.dcm"), out_dir / "ct.dcm")


def flat(array: np.ndarray) -> list:
    return np.asarray(array, dtype=np.float64).ravel().tolist()


def segmentation(path: str, ds: pydicom.Dataset) -> dict:
    seg = hd.seg.segread(path)
    source = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([source], combine_segments=False, rescale_fractional=True)
    segment = seg.get_segment_description(1)
    algorithm = segment.algorithm_identification[0]
    return {
        "pydicom": flat(ds.pixel_array / float(ds.MaximumFractionalValue)),
        "highdicom": flat(pixels[0, :, :, 0]),
        "segmentation_type": seg.segmentation_type.value,
        "fractional_type": ds.SegmentationFractionalType,
        "highdicom_source_uids": [list(uids) for uids in seg.get_source_image_uids()],
        "segment_label": segment.segment_label,
        "segment_description": str(segment.get("SegmentDescription", "")),
        "algorithm_type": segment.algorithm_type.value,
        "algorithm_name": str(algorithm.AlgorithmName),
        "algorithm_version": str(algorithm.AlgorithmVersion),
        "algorithm_parameters": json.loads(algorithm.AlgorithmParameters),
    }


def parametric_map(path: str, ds: pydicom.Dataset) -> dict:
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    return {
        "pydicom": flat(ds.pixel_array),
        "highdicom": flat(hd.imread(path).get_volume().array),
        "pixel_data_tag": "FloatPixelData" if "FloatPixelData" in ds else "other",
        "frame_label": ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameLabel,
        "real_world_value_first": float(mapping.DoubleFloatRealWorldValueFirstValueMapped),
        "real_world_value_last": float(mapping.DoubleFloatRealWorldValueLastValueMapped),
        "real_world_value_slope": float(mapping.RealWorldValueSlope),
    }


def secondary_capture(path: str, ds: pydicom.Dataset) -> dict:
    if ds.PhotometricInterpretation == "RGB":
        return {"pydicom": [], "highdicom": []}
    return {
        "pydicom": flat(apply_modality_lut(ds.pixel_array, ds)),
        "highdicom": flat(hd.imread(path).get_frame(1, apply_voi_transform=False)),
    }


def describe(path: str) -> dict:
    ds = pydicom.dcmread(path)
    source = ds.SourceImageSequence[0]
    entry = {
        "sop_class_uid": ds.SOPClassUID,
        "sop_instance_uid": ds.SOPInstanceUID,
        "modality": ds.Modality,
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "patient_id": str(ds.PatientID),
        "referenced_sop_instance_uid": source.ReferencedSOPInstanceUID,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "provenance": json.loads(ds.ImageComments),
    }
    read = {SEGMENTATION: segmentation, PARAMETRIC_MAP: parametric_map}.get(ds.SOPClassUID, secondary_capture)
    entry.update(read(path, ds))
    return entry


def main() -> None:
    if sys.argv[1] == "sources":
        sources(Path(sys.argv[2]))
    else:
        with open(sys.argv[2], "w") as out:
            json.dump([describe(path) for path in sys.argv[3:]], out)


if __name__ == "__main__":
    main()
