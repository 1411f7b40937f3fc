"""Data in and out: import, export, browse, search, the SQL console, uploads, the demo generator."""
