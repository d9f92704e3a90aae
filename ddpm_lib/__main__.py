"""Command line: ``python -m ddpm_lib train | sample | export | fid`` (being written)."""
