"""``vigil``'s exit codes: 0 ok, 1 a failure found, 2 a usage or config error."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
