"""Real tasks built offline from local data: contexts, references and their constraints."""
