"""Greedy decoding with the step recorded once as a CUDA graph and replayed: no compilation, no Python per step.

Measured on an H100 (bench/decode_profile.py, Qwen2.5-0.5B shape, bf16): the uncompiled decoding step of
`model.generate` costs 35-41 ms whatever the rows (125 to 1,000), nearly all of it the CPU launching some
700 small kernels one by one; the GPU's own work for 1,000 rows is a fraction of that. Recording the step
as a CUDA graph (`torch.cuda.graph`, about one step's time) and replaying it leaves only the GPU's work,
without the 20-25 s that compiling the step with Inductor costs.

The loop is `generate`'s greedy search, written out so that every per-step value lives in a device tensor
the graph updates in place:

- prefill: the model's own forward on the left-padded prompts with a `StaticCache` (the model builds the
  mask and positions, as `generate` does); the first new token is the argmax of the last logits;
- each step: the token in `token`, at position `position` (per row: its prompt tokens + steps so far),
  attends to the cache slots set in `allowed` (its prompt and what it generated: a 4D boolean mask, which
  every model's mask builder passes through as is); the cache writes its key/value at its own counter
  (transformers' StaticLayer `cumulative_length`, a device tensor); argmax; rows that have finished get
  `pad_id` (as `generate`); a row finishes at its first end-of-sequence token; a repetition penalty in the
  generation config is applied as transformers' processor does (the prompt's left padding left out);
- the loop stops when every row has finished (checked every `CHECK_EVERY` steps: each check waits for the
  GPU) or at max_new_tokens; the result is cut to the step where the last row finished, as `generate`'s is.

`capture=False` runs the same step without a graph (the CPU tests compare it with `model.generate` token
for token in float32; tests/trainers/test_trainer_gpu.py compares the graph on a GPU). `supported` says
whether a model can take this path: a plain (merged) model with SDPA attention, only full or sliding
attention layers (no linear-attention or state-space hybrids, no chunked attention) and a static cache that
counts its own length; `fits` whether a batch stays within a sliding window. Anything else keeps `generate`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable

import torch

CHECK_EVERY = 16
# generation_config settings that leave greedy search alone (sampling is off here), or that the loop applies
# itself (repetition_penalty); any other setting (no_repeat_ngram_size, bad_words_ids, ...) keeps `generate`
GREEDY_NEUTRAL = {"do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                  "pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id", "transformers_version",
                  "max_length", "max_new_tokens", "use_cache", "cache_implementation", "num_beams",
                  "num_return_sequences", "output_attentions", "output_hidden_states", "return_dict_in_generate",
                  "repetition_penalty", "_from_model_config"}


@functools.cache  # a property of the installed transformers: looked up once a process
def _static_layers_count_themselves() -> bool:
    try:
        from transformers.cache_utils import StaticLayer
    except ImportError:
        return False
    return "cumulative_length" in getattr(StaticLayer, "__annotations__", {})


PLAIN_LAYER_TYPES = {"full_attention", "sliding_attention"}


@functools.cache  # reads transformers' source: once a process, not at every answer
def _penalty_skips_padding() -> bool:
    """Whether this transformers' generate leaves the prompt's left padding out of the repetition penalty
    (5.2x: `prompt_ignore_length=padding_lengths`), as the loop does; else a penalty keeps `generate`."""
    try:
        from transformers.generation.utils import GenerationMixin

        return "prompt_ignore_length=padding_lengths" in inspect.getsource(GenerationMixin._get_logits_processor)
    except (ImportError, AttributeError, OSError, TypeError):
        return False


def supported(model) -> bool:
    """A model this loop decodes exactly as `generate` does."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        return False  # e.g. the chat's streaming view: it streams through generate
    if getattr(model, "peft_config", None):
        return False  # an unmerged adapter (prompt tuning, 4-bit bases) keeps generate
    if getattr(config, "_attn_implementation", None) != "sdpa" or getattr(config, "is_encoder_decoder", False):
        return False  # the boolean mask below is SDPA's; eager attention adds a float mask
    if not _static_layers_count_themselves():
        return False  # older transformers: the cache writes where the caller's cache_position says
    if not set(getattr(config, "layer_types", None) or ["full_attention"]) <= PLAIN_LAYER_TYPES:
        return False  # hybrids (linear attention, state-space layers) keep state the loop does not manage
    if getattr(config, "attention_chunk_size", None):
        return False  # chunked attention (Llama 4) needs its own mask
    generation = getattr(model, "generation_config", None)
    if generation is not None and not set(generation.to_diff_dict()) <= GREEDY_NEUTRAL:
        return False
    if repetition_penalty(model) != 1.0 and not _penalty_skips_padding():
        return False
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def repetition_penalty(model) -> float:
    generation = getattr(model, "generation_config", None)
    return float(getattr(generation, "repetition_penalty", None) or 1.0)


def _penalised(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on float32 scores: every token in `seen` (the prompt without
    its left padding, and what was generated) has its score divided by the penalty (multiplied, when negative)."""
    scores = logits.float()
    if penalty == 1.0:
        return scores
    score = torch.gather(scores, 1, seen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter_(1, seen, score)


def _cache_kwarg(model) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def fits(model, length: int) -> bool:
    """Whether a batch of `length` tokens (prompt width + new tokens) can use this loop: its one mask is the
    full causal one, which a sliding-window model (Mistral's 4,096) only shares up to its window."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    uses_window = window is not None and (not types or "sliding_attention" in types)
    return not (uses_window and length > window)


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, pad_id: int,
           eos: list[int] | None, capture: bool = True,
           on_token: Callable[[list[int]], bool] | None = None) -> torch.Tensor:
    """New token ids (rows x up to max_new_tokens) of greedy decoding from left-padded prompts.

    `on_token(tokens)`, when given, gets each step's tokens (one per row) as the step ends, and stops the
    decoding by returning False (the Playground streams its answer this way; each call waits for the GPU)."""
    from transformers import StaticCache

    rows, width = input_ids.shape
    device = input_ids.device
    length = width + max_new_tokens
    if not fits(model, length):
        raise ValueError(f"{length} tokens is longer than the model's sliding window; decode it with generate")
    if max_new_tokens < 1:
        return input_ids.new_zeros((rows, 0))
    cache = StaticCache(config=model.config, max_cache_len=length)
    cache_kw = _cache_kwarg(model)
    mask2d = attention_mask.to(device=device, dtype=torch.long)
    prefill_pos = (mask2d.cumsum(-1) - 1).masked_fill(mask2d == 0, 1)
    logits = model(input_ids=input_ids, attention_mask=mask2d, position_ids=prefill_pos, use_cache=True,
                   logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
    eos_t = torch.tensor(sorted(set(eos or [])), dtype=torch.long, device=device)
    penalty = repetition_penalty(model)
    # the tokens so far, for the repetition penalty: the left padding (which generate leaves out: its
    # prompt_ignore_length) and the slots not yet generated repeat the row's last prompt token (a duplicate
    # changes nothing); slot width + k - 1 is filled before step k
    padding = (mask2d != 0).int().argmax(dim=1)  # as generate counts it
    prompt = torch.where(torch.arange(width, device=device)[None, :] < padding[:, None], input_ids[:, -1:], input_ids)
    seen = torch.cat([prompt, input_ids[:, -1:].expand(rows, max_new_tokens)], 1).contiguous()
    new = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    first = _penalised(logits, seen, penalty).argmax(-1)
    new[:, 0] = first
    unfinished = ~torch.isin(first, eos_t)
    if on_token is not None and not on_token(first.tolist()):
        return new[:, :1]
    if not bool(unfinished.any()):
        return new[:, :1]  # every row ended on its first token (generate stops there too)
    if max_new_tokens == 1:
        return new
    # the step's inputs and state, updated in place (a graph replays on these very tensors)
    token = first[:, None].clone()
    position = mask2d.sum(-1, keepdim=True)  # the first new token's position: the row's prompt tokens
    allowed = torch.zeros((rows, 1, 1, length), dtype=torch.bool, device=device)
    allowed[:, 0, 0, :width] = mask2d.bool()
    out = torch.empty(rows, dtype=torch.long, device=device)
    pad = torch.full((), pad_id, dtype=torch.long, device=device)

    def step() -> None:
        step_logits = model(input_ids=token, attention_mask=allowed, position_ids=position, use_cache=True,
                            logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
        nxt = torch.where(unfinished, _penalised(step_logits, seen, penalty).argmax(-1), pad)
        out.copy_(nxt)
        token.copy_(nxt[:, None])
        unfinished.logical_and_(~torch.isin(nxt, eos_t))
        position.add_(1)

    graph = None
    if capture and device.type == "cuda":
        try:
            graph = _record(step, cache, [token, position, unfinished], allowed, width)
        except RuntimeError as exc:  # a model whose step cannot be recorded: the same step, run uncaptured
            print(f"note: decoding without a CUDA graph ({str(exc).splitlines()[0][:200]})", file=sys.stderr)
    done = 1
    for k in range(1, max_new_tokens):
        allowed[:, 0, 0, width + k - 1] = True  # the slot the step's token is written to
        seen[:, width + k - 1] = new[:, k - 1]
        if graph is not None:
            graph.replay()
        else:
            step()
        new[:, k] = out
        done = k + 1
        if on_token is not None:
            if not on_token(out.tolist()) or not bool(unfinished.any()):
                break
        elif done % CHECK_EVERY == 0 and not bool(unfinished.any()):
            break
    return new[:, :_steps_run(new[:, :done], eos_t)]


def _record(step, cache, state: list[torch.Tensor], allowed: torch.Tensor, width: int):
    """A CUDA graph of `step`, after one warm-up run on a side stream (cuBLAS and the allocator settle);
    the warm-up's changes to the state and the cache's counters are undone."""
    saved = [t.clone() for t in state]
    # every counter of the cache layers, tensor or Python number (a sliding layer keeps both); the keys and
    # values the warm-up wrote at slot `width` are written again by the first real step
    layers = list(getattr(cache, "layers", []))
    counters = [(layer, name, value.clone() if isinstance(value, torch.Tensor) else value)
                for layer in layers for name, value in vars(layer).items()
                if name not in ("keys", "values") and (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                       or isinstance(value, torch.Tensor) and value.numel() <= 1)]
    allowed[:, 0, 0, width] = True  # the warm-up's slot: the first step writes it again
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the Playground decodes in a thread
            step()  # recorded, not run
    finally:
        for t, s in zip(state, saved):
            t.copy_(s)
        for layer, name, value in counters:
            if isinstance(value, torch.Tensor):
                getattr(layer, name).copy_(value)
            else:
                setattr(layer, name, value)
    return graph


def _steps_run(new: torch.Tensor, eos_t: torch.Tensor) -> int:
    """The columns `generate` returns: up to the step where the last row met its end-of-sequence token."""
    if eos_t.numel() == 0:
        return new.shape[1]
    hit = torch.isin(new, eos_t)
    finished = hit.any(-1)
    if not bool(finished.all()):
        return new.shape[1]
    return int(hit.int().argmax(-1).max()) + 1
