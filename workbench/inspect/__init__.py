"""Looking at a version: token lengths, duplicates, PII, quality flags (cached per version)."""
