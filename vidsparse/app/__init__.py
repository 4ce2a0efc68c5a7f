"""The product on top of the library, imported by nothing in it: the CLI (`vidsparse generate | compare | search |
bench | selfcheck`), model loading and configs, reports, metrics and media."""
