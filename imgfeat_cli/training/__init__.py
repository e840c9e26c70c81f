"""Training building blocks (metric learning recipe of PaddleClas GeneralRecognitionV2)."""
