"""Data files shipped with trcgl (mapping tables, exclusion lists, the NIH demo sample)."""
