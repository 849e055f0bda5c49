"""Input and output: RAW reading, DNG writing, atomic file writes."""
