"""Dataset tools for ShiTuRecDataset folders: check, convert (LabelMe), split, reports."""
