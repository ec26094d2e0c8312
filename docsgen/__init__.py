"""Build-time helpers of the documentation site (mkdocs.yml): not part of the losskit package."""
