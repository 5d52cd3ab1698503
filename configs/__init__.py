"""Config profiles (``cpu.toml``, ``gpu.toml``): a data package so the wheel ships them as ``streamer.configs``."""
