"""The data packages of the presets: ``slam.presets.configs`` and ``slam.presets.launch`` are the
repository's top-level ``configs/`` and ``launch/`` folders, installed into the wheel (pyproject.toml maps
them); ``slam.app.presets`` finds a preset by name in them."""
