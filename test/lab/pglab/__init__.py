"""pgcluster lab package."""
