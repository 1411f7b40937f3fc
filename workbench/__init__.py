"""Workbench core: project store, import/export, versions, CLI. Never imports streamlit."""
