"""gunicorn's settings that come from ours: its logging (LOG_LEVEL, LOG_FORMAT), the same as
every other process's, with its access log through the same handler."""

import multiprocessing

from core.config import load_settings
from core.logs import logging_config

_settings = load_settings()
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
multiprocessing.current_process().name = "web"  # the workers are forked from here
