"""Stage `migrator`: applies the versioned SQL schema in storage/migrations."""
