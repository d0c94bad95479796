"""Command lines of the package (console scripts of pyproject.toml; tools/*.py call them):
``ssd-r34-train`` (:mod:`.train`), ``ssd-r34-lazy-train`` (:mod:`.lazy_train`),
``ssd-r34-convert-mlperf`` (:mod:`.convert_mlperf`)."""
