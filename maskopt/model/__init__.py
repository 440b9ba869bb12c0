"""The model side: loading, family adapters, the block walker (calibration)."""
