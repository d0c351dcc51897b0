"""Label statistics: frequency groups and the label co-occurrence graph (Eq. 15–20)."""
