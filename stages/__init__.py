"""Stage presets (TOML), shipped inside the wheel as the package ``cxrkit.presets``."""
