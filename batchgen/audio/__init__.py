"""Audio files: WAV without the stdlib's limits, stitching chains and closing loops,
loudness and true peak, mastering, tags.
"""
