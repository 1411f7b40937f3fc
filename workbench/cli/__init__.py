"""The `workbench` command: `main` builds the parser and runs a command; one module per area registers its commands."""
