"""Readers and writers for raw inputs (DICOM, images, reports) and artifact data."""
