"""The vocabulary, no I/O: jobs and kinds, statuses, errors, templates, phones, ids, backoff."""
