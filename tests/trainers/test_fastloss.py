"""The GPU loss path (trainers.fastloss) computed on the CPU: the chunked supervised-only cross-entropy
against torch's own cross-entropy on the full logits, values and gradients."""

import random

import pytest
import torch
import torch.nn.functional as F

from tests.trainers.test_trainer_fixtures import one_thread
from trainers import data as D
from trainers import fastloss
from trainers.config import TrainConfig
from trainers.train import loss_sum, wrap_peft


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = one_thread()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("chunk_rows", [1, 8, 1000])
def test_chunked_cross_entropy_equals_torch_cross_entropy(chunk_rows):
    g = torch.Generator().manual_seed(chunk_rows)
    h = torch.randn(37, 16, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (37,), generator=g)
    ours = fastloss.supervised_cross_entropy(h, w, y, chunk_rows)
    (2.5 * ours).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), y, reduction="sum")
    (2.5 * ref).backward()
    assert torch.allclose(ours, ref.float(), rtol=1e-6)
    assert torch.allclose(gh, h.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gw, w.grad, rtol=1e-9, atol=1e-12)


def test_no_gradients_made_without_grad():
    h = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(7, 4)
    with torch.no_grad():
        loss = fastloss.supervised_cross_entropy(h, w, torch.tensor([0, 1, 2, 3, 6]))
    assert not loss.requires_grad
    ref = F.cross_entropy(h.detach() @ w.t(), torch.tensor([0, 1, 2, 3, 6]), reduction="sum")
    assert torch.allclose(loss, ref, rtol=1e-6)


def _examples(n: int, vocab: int, seed: int) -> list[D.Example]:
    """Token-id examples: a prompt without labels, then a supervised answer (labels = the tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(6, 40)
        ids = [rng.randrange(vocab) for _ in range(length)]
        cut = rng.randint(2, length - 2)
        out.append(D.Example(ids, [D.IGNORE] * cut + ids[cut:], False))
    return out


def _tiny_lora(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config)
    cfg = TrainConfig(lora_rank=4, lora_dropout=0.0)
    peft_model = wrap_peft(model, cfg)
    with torch.no_grad():  # LoRA B starts at zero; give the adapter an effect so its gradients mean something
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return peft_model


@pytest.mark.parametrize("packed", [True, False])
def test_fast_loss_sum_equals_full_logits_loss(packed):
    model = _tiny_lora()
    examples = _examples(12, 97, seed=1)
    batches = D.epoch_batches(examples, batch_tokens=128, max_len=64, packed=packed, seed=0, epoch=0, pad_id=0)
    assert len(batches) > 1
    for batch in batches:
        lora = [p for p in model.parameters() if p.requires_grad]
        plain = loss_sum(model, batch)  # on the CPU: the plain path, full logits
        plain.backward()
        ref_grads = [p.grad.clone() for p in lora]
        model.zero_grad(set_to_none=True)
        fast = fastloss.loss_sum(model, batch, chunk_rows=7)
        fast.backward()
        assert torch.allclose(fast, plain, rtol=1e-5), (float(fast), float(plain))
        for p, ref in zip(lora, ref_grads):
            assert torch.allclose(p.grad, ref, rtol=1e-4, atol=1e-6)
        model.zero_grad(set_to_none=True)
    # the hook is gone: the model's own forward gives full-width logits again
    assert model(input_ids=batches[0]["input_ids"]).logits.shape[1] == batches[0]["input_ids"].shape[1]


def test_padding_packed_rows_keeps_the_loss():
    model = _tiny_lora().eval()
    batch = D.epoch_batches(_examples(8, 97, seed=2), batch_tokens=512, max_len=100, packed=True, seed=0, epoch=0,
                            pad_id=0)[0]
    padded = fastloss.pad_packed(batch, multiple=64)
    assert padded["input_ids"].shape[1] % 64 == 0 and padded["input_ids"].shape[1] > batch["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.allclose(loss_sum(model, padded), loss_sum(model, batch), rtol=1e-5)
    assert D.supervised_in(padded) == D.supervised_in(batch)


def test_supports_plain_heads_only():
    model = _tiny_lora()
    assert fastloss.supports(model)
    import peft
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    prompt = peft.get_peft_model(base, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert not fastloss.supports(prompt)
