"""Training loops. Each method has its own module; shared checkpoint/log helpers live in ``base``."""
