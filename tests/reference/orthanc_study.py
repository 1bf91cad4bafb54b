#!/usr/bin/env python3
"""Small DICOM studies for the Orthanc plugin test (tests/orthanc.rs), written with pydicom.

Usage: orthanc_study.py OUT_DIR

Writes into OUT_DIR, 64 x 64 chest-like images (a graded background with a bright disc):
  mono1.dcm        CR, MONOCHROME1, 12 bits stored in 16, Rescale Slope/Intercept and a window
  mono2_a.dcm, mono2_b.dcm
                   DX, MONOCHROME2, 10 bits stored, another patient's study, one series of two
  auto.dcm         CR, MONOCHROME2, series "AUTO chest" (the test's auto-processing rule matches it)
  other.dcm        CR, MONOCHROME2, series "Knee" (the rule does not match it)
  sr.dcm           a Basic Text structured report (no pixels)
  corrupt.dcm      DX, MONOCHROME2 whose Pixel Data is 100 bytes for 64 x 64 x 16 bits
"""

import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SIZE = 64
CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def chest(seed: int, levels: int) -> np.ndarray:
    """A graded background and a bright disc whose place depends on `seed`, in 0 .. levels - 1."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    image = 0.25 + 0.35 * y / SIZE + 0.05 * rng.standard_normal((SIZE, SIZE))
    cy, cx = rng.uniform(16, 48, size=2)
    image += 0.4 * (((y - cy) ** 2 + (x - cx) ** 2) < 36)
    return np.clip(image * (levels - 1), 0, levels - 1).astype(np.uint16)


def base(sop_class: str, patient: str, study: str, series: str, description: str, modality: str, number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName = f"Test^{patient}"
    ds.PatientID = patient
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = patient[:16]
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 1
    ds.SeriesDescription = description
    ds.Modality = modality
    ds.InstanceNumber = number
    return ds


def with_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits: int) -> Dataset:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def image(patient, study, series, description, modality, number, seed, photometric="MONOCHROME2", bits=10):
    ds = base(CR if modality == "CR" else DX, patient, study, series, description, modality, number)
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    return with_pixels(ds, chest(seed, 2**bits), photometric, bits)


def mono1() -> Dataset:
    ds = image("MONO1", generate_uid(), generate_uid(), "Chest PA", "CR", 1, 1, "MONOCHROME1", 12)
    # MONOCHROME1: bright (dense) is low; the stored values are inverted.
    ds.PixelData = (4095 - np.frombuffer(ds.PixelData, "<u2")).astype("<u2").tobytes()
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "-100"
    ds.RescaleType = "US"
    ds.WindowCenter = "800"
    ds.WindowWidth = "1600"
    return ds


def structured_report() -> Dataset:
    ds = base(BASIC_TEXT_SR, "SR", generate_uid(), generate_uid(), "Report", "SR", 1)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = Sequence([concept])
    text.TextValue = "No finding."
    ds.ContentSequence = Sequence([text])
    return ds


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    corrupt = image("CORRUPT", generate_uid(), generate_uid(), "Chest", "DX", 1, 6)
    corrupt.PixelData = bytes(100)
    files = {
        "mono1": mono1(),
        "mono2_a": image("MONO2", study, series, "Chest AP", "DX", 1, 2),
        "mono2_b": image("MONO2", study, series, "Chest AP", "DX", 2, 3),
        "auto": image("AUTO", generate_uid(), generate_uid(), "AUTO chest", "CR", 1, 4),
        "other": image("OTHER", generate_uid(), generate_uid(), "Knee", "CR", 1, 5),
        "sr": structured_report(),
        "corrupt": corrupt,
    }
    for name, ds in files.items():
        ds.save_as(out / f"{name}.dcm", enforce_file_format=True)


if __name__ == "__main__":
    main()
