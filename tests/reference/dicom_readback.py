#!/usr/bin/env python3
"""How pydicom reads DICOM files libdiffmine wrote (tests/dicom.rs, the map write-back).

Usage: dicom_readback.py OUT.json FILE...

Writes OUT.json, one object per file: the identifying attributes (SOP class and instance, study and
series UIDs, patient ID and name, modality, the Source Image Sequence's referenced SOP instance),
the image's geometry and photometric interpretation, and "values": pydicom's pixel_array passed
through apply_modality_lut, flattened in C order.
"""

import json
import sys

import pydicom
from pydicom.pixels import apply_modality_lut


def describe(path: str) -> dict:
    ds = pydicom.dcmread(path)
    source = ds.SourceImageSequence[0]
    return {
        "sop_class_uid": ds.SOPClassUID,
        "sop_instance_uid": ds.SOPInstanceUID,
        "media_storage_sop_instance_uid": ds.file_meta.MediaStorageSOPInstanceUID,
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "patient_id": str(ds.get("PatientID", "")),
        "patient_name": str(ds.get("PatientName", "")),
        "modality": ds.Modality,
        "referenced_sop_instance_uid": source.ReferencedSOPInstanceUID,
        "referenced_sop_class_uid": source.ReferencedSOPClassUID,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "photometric": ds.PhotometricInterpretation,
        "values": apply_modality_lut(ds.pixel_array, ds).astype(float).ravel().tolist(),
    }


def main() -> None:
    with open(sys.argv[1], "w") as out:
        json.dump([describe(path) for path in sys.argv[2:]], out)


if __name__ == "__main__":
    main()
