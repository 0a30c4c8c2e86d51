"""The `vans` command line."""
