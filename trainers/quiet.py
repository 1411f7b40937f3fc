"""The settings every trainer and generator process starts with: offline, and a log a person can read.

The libraries print progress bars ("Loading weights: 100%|...") and deprecation notices meant for their own
developers (transformers' FutureWarnings) into trainer.log and generate.log, where users look for what went
wrong. Our own progress goes to events.jsonl and the progress files instead."""

from __future__ import annotations

import os
import warnings


def child_process_setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network: local folders and the local cache only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate|torch)(\.|$)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
