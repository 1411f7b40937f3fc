"""The foundation: project folder, store, schema, versions, record formats, accounts, jobs, files."""
