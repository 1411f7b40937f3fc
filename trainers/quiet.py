"""Settings for a log and a terminal a person can read, and for the trainer and generator processes.

The libraries print progress bars ("Loading weights: 100%|...") and deprecation notices meant for their own
developers (transformers' FutureWarnings) into trainer.log, generate.log and the CLI's output, where users
look for what went wrong. Our own progress goes to events.jsonl, the progress files and our progress bars."""

from __future__ import annotations

import os
import sys
import warnings


def no_hub_kernels() -> None:
    """Models run the code that was installed, never code fetched at load time. transformers 5.2x "kernelizes"
    every `from_pretrained` model with kernels downloaded from the Hugging Face Hub (kernels-community/rotary,
    ...) when the `kernels` package is installed, which transformers now requires: on a GPU offline, training
    failed with "Version 2 of 'kernels-community/rotary' is not available in the local cache" (H100,
    2026-12-06), and online it would run downloaded code. Off unless the user sets USE_HUB_KERNELS.
    Set when the `trainers` package is imported, so every model Workbench loads (app, CLI, trainer and
    generator processes) is covered."""
    os.environ.setdefault("USE_HUB_KERNELS", "0")


def quiet_libraries() -> None:
    """No library progress bars and no FutureWarnings from the ML libraries. Cheap: imports nothing; the
    environment variable is read when huggingface_hub/transformers are first imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate|torch)(\.|$)")
    if "transformers" in sys.modules:  # already imported: its progress bars were decided then
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def child_process_setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network: local folders and the local cache only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
